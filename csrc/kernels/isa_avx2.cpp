// AVX2 + FMA engine (built with -mavx2 -mfma): 6 x 2 ymm accumulators.
#define RF_VBYTES 32
#define RF_MR_F 6
#define RF_MR_D 6
#define RF_NV 2
#define RF_ISA avx2
#define RF_ISA_NAME "avx2"
#include "driver_impl.h"
