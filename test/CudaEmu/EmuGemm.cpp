// lib/Runtime/Cuda/Gemm.cu built by the host compiler over the emulator.
#include "EmuPrelude.h"

#include "Cuda/Gemm.cu"
