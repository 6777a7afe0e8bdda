// AVX-512F engine (built with -mavx512f -mfma): 8 x 2 zmm accumulators.
#define RF_VBYTES 64
#define RF_MR_F 8
#define RF_MR_D 8
#define RF_NV 2
#define RF_KS1_LONG 2  // see ukernel_impl.h
#define RF_ISA avx512
#define RF_ISA_NAME "avx512"
#include "driver_impl.h"
