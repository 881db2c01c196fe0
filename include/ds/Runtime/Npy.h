//===- Npy.h - float32 .npy output ------------------------------*- C++ -*-===//

#ifndef DS_RUNTIME_NPY_H
#define DS_RUNTIME_NPY_H

#include <cstdint>
#include <string>

namespace dsrt {

/// Writes `data` [rows, cols] (row-major float32) as a little-endian `.npy`
/// (format 1.0). The bytes go to a temporary file in the same directory that
/// is renamed over `path` only when complete, so a failure leaves no
/// half-written file. Returns false and sets `error` ("PATH: reason") on
/// failure.
bool writeNpy(const std::string &path, const float *data, int64_t rows,
              int64_t cols, std::string *error);

} // namespace dsrt

#endif // DS_RUNTIME_NPY_H
