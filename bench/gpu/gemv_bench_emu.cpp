//===- gemv_bench_emu.cpp - ds-gemv-bench on the CPU ----------------------===//
//
// GemvBench.h's program built by the host compiler over the CUDA emulator
// (test/Unit/CudaEmu.h): the kernels run on the CPU at small shapes, so the
// benchmark's own logic and the forms' agreement are checked without a GPU
// (test/e2e/gemv-bench.test).
//
//===----------------------------------------------------------------------===//

#include "CudaEmu.h"

#include "GemvBench.h"

int main(int argc, char **argv) { return gemvbench::benchMain(argc, argv); }
