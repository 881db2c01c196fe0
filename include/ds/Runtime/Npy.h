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

/// The same file written row by row, for arrays that arrive over a run
/// (decode steps): open() creates the temporary and writes the header,
/// append() adds rows, commit() checks that all `rows` came and renames the
/// file over `path`. A writer destroyed before commit() removes its
/// temporary. Errors read "PATH: reason".
class NpyWriter {
public:
  NpyWriter() = default;
  NpyWriter(const NpyWriter &) = delete;
  NpyWriter &operator=(const NpyWriter &) = delete;
  ~NpyWriter();

  bool open(const std::string &path, int64_t rows, int64_t cols,
            std::string *error);
  /// Appends `n` rows of `cols` floats (at most the rows left).
  bool append(const float *data, int64_t n, std::string *error);
  bool commit(std::string *error);
  bool isOpen() const { return fd_ >= 0; }

private:
  void abandon();

  std::string path_, tmp_;
  int fd_ = -1;
  int64_t rows_ = 0, cols_ = 0, written_ = 0;
};

} // namespace dsrt

#endif // DS_RUNTIME_NPY_H
