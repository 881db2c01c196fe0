//===- Safetensors.h - mmap'ed, validated safetensors checkpoints -*- C++ -*-===//
//
// A .safetensors file is an 8-byte little-endian header length N, N bytes of
// JSON ({"name": {"dtype": ..., "shape": [...], "data_offsets": [b, e]}, ...,
// optional "__metadata__"}), then the data section that the offsets index.
//
// SafetensorsFile maps a file read-only and validates its whole header at
// open, so a tensor handed out always lies inside the file, has the size its
// dtype and shape imply, and overlaps no other tensor. Checkpoint groups the
// files of a checkpoint (one file, a sharded directory with an index, or a
// directory of *.safetensors) behind one name -> tensor lookup.
//
// Every error message starts with the path of the offending file (or
// directory) and names the tensor where there is one. No exceptions.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RUNTIME_SAFETENSORS_H
#define DS_RUNTIME_SAFETENSORS_H

#include "ds/Runtime/Runtime.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dsrt {

class SafetensorsFile;

/// One tensor of a safetensors file; `data` points into the file's mapping
/// and stays valid while the file is open.
struct Tensor {
  std::string name;
  std::string dtypeName;      ///< As written in the header, e.g. "BF16".
  bool supported = false;     ///< dtypeName is F32, BF16, F16 or F8_E4M3.
  DType dtype = DType::F32;   ///< Meaningful only when `supported`.
  std::vector<int64_t> shape;
  const uint8_t *data = nullptr;
  uint64_t bytes = 0;
  const SafetensorsFile *file = nullptr;

  int64_t numel() const;
  /// "[a, b]" (for messages).
  std::string shapeString() const;
};

/// The name of `dtype` as safetensors spells it ("F32", "F8_E4M3", ...).
const char *dtypeName(DType dtype);

/// Formats a shape as "[a, b]".
std::string shapeString(const int64_t *shape, int64_t rank);

/// A read-only mapped, fully validated .safetensors file.
class SafetensorsFile {
public:
  /// Maps and validates `path`. Returns null and sets `error` on failure.
  static std::unique_ptr<SafetensorsFile> open(const std::string &path,
                                               std::string *error);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile &) = delete;
  SafetensorsFile &operator=(const SafetensorsFile &) = delete;

  const std::string &path() const { return path_; }
  /// All tensors, in the order of the header.
  const std::vector<Tensor> &tensors() const { return tensors_; }
  /// The tensor called `name`, or null.
  const Tensor *find(const std::string &name) const;

private:
  SafetensorsFile() = default;
  bool parse(std::string *error);

  std::string path_;
  const uint8_t *map_ = nullptr;
  uint64_t size_ = 0;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t> index_;
};

/// The tensors of a checkpoint: a .safetensors file, a directory with
/// model.safetensors.index.json (its "weight_map" says which file holds
/// which tensor), or else a directory whose *.safetensors files together hold
/// every tensor once.
class Checkpoint {
public:
  /// Opens and validates every file of the checkpoint at `path`. Returns
  /// null and sets `error` on failure.
  static std::unique_ptr<Checkpoint> open(const std::string &path,
                                          std::string *error);

  /// The path given to open() (for messages).
  const std::string &path() const { return path_; }
  const std::vector<std::unique_ptr<SafetensorsFile>> &files() const {
    return files_;
  }
  /// The tensor called `name`, or null. Does not check the dtype.
  const Tensor *find(const std::string &name) const;
  /// The tensor called `name` when it exists and has a supported dtype;
  /// otherwise null and `error` is set:
  ///   "PATH: tensor 'NAME' not found"
  ///   "FILE: tensor 'NAME' has unsupported dtype I64 (supported: F32, BF16,
  ///    F16, F8_E4M3)"
  const Tensor *get(const std::string &name, std::string *error) const;

private:
  Checkpoint() = default;
  bool openIndex(const std::string &indexPath, std::string *error);
  bool openAll(std::string *error);

  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const Tensor *> tensors_;
};

} // namespace dsrt

#endif // DS_RUNTIME_SAFETENSORS_H
