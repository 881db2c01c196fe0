// lib/Runtime/Cuda/MoE.cu built by the host compiler over the emulator.
#include "EmuPrelude.h"

#include "Cuda/MoE.cu"
