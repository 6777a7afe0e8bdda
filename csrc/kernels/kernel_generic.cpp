// Portable path: 16-byte vectors (SSE2 on x86-64, NEON elsewhere, scalar loops if neither).
#define RF_VBYTES 16
#include "ukernel_impl.h"

rnnfast::KernelSet rnnfast::kernels_generic() { return make_kernel_set<6, 6, 2>("generic"); }
