// Portable engine: 16-byte vectors (SSE2 on x86-64, NEON on arm64, scalar code elsewhere).
#define RF_VBYTES 16
#define RF_MR_F 6
#define RF_MR_D 6
#define RF_NV 2
#define RF_ISA generic
#define RF_ISA_NAME "generic"
#include "driver_impl.h"
