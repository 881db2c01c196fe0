// lib/Runtime/Cuda/Device.cu built by the host compiler over the emulator.
#include "EmuPrelude.h"

#include "Cuda/Device.cu"
