//===- MainMpi.cpp - main of multi-rank executables -----------------------===//

#include "ds/Runtime/Comm.h"
#include "ds/Runtime/Runtime.h"

#include <cstdio>

int dsrt::runMainMpi(int argc, char **argv, const ModelSpec &spec) {
  std::string error;
  std::unique_ptr<Comm> world = createMpiComm(&argc, &argv, &error);
  if (!world) {
    std::fprintf(stderr, "error: %s\n", error.c_str());
    return 1;
  }
  int code = runMain(argc, argv, spec, world.get());
  world.reset(); // MPI_Finalize (or MPI_Abort after a failed collective)
  return code;
}
