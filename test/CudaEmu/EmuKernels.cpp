// lib/Runtime/Cuda/Kernels.cu built by the host compiler over the emulator.
#include "EmuPrelude.h"

#include "Cuda/Kernels.cu"
