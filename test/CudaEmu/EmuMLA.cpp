// lib/Runtime/Cuda/MLA.cu built by the host compiler over the emulator.
#include "EmuPrelude.h"

#include "Cuda/MLA.cu"
