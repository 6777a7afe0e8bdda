// AVX2 + FMA path (compiled with -mavx2 -mfma): 6 x 2 ymm accumulators.
#define RF_VBYTES 32
#include "ukernel_impl.h"

rnnfast::KernelSet rnnfast::kernels_avx2() { return make_kernel_set<6, 6, 2>("avx2"); }
