// RUN: not ds-opt --ds-lower-to-kernels="max-seq-len=4 max-batch=8" %s 2>&1 | FileCheck %s
// CHECK: error: ds-lower-to-kernels: need 0 < max-batch (8) <= max-seq-len (4)
module {
  func.func @forward() {
    return
  }
}
