// AVX-512F path (compiled with -mavx512f -mfma): 8 x 2 zmm accumulators.
#define RF_VBYTES 64
#include "ukernel_impl.h"

rnnfast::KernelSet rnnfast::kernels_avx512() { return make_kernel_set<8, 8, 2>("avx512"); }
