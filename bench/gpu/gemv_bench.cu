//===- gemv_bench.cu - ds-gemv-bench on a GPU ----------------------------===//
//
// GemvBench.h's program built by nvcc (sm_90a and sm_80).
//
//===----------------------------------------------------------------------===//

#include "GemvBench.h"

int main(int argc, char **argv) { return gemvbench::benchMain(argc, argv); }
