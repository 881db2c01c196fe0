//===- Safetensors.cpp - mmap'ed, validated safetensors checkpoints -------===//
//
// The header is untrusted input: the strict JSON parser of Json.h (bounded
// nesting, integers only) reads it, and every offset is checked against the
// file before any tensor is handed out.
//
//===----------------------------------------------------------------------===//

#include "ds/Runtime/Safetensors.h"

#include "Json.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "libdsrt reads little-endian checkpoint data in place"
#endif

using namespace dsrt;

namespace {

// A header or index above this is not a checkpoint we can mean to read
// (DeepSeek-V3's index.json, the largest real one, is about 8 MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

/// Bytes per element of each safetensors dtype; 0 for dtypes we do not know
/// (sub-byte ones), whose size is then not checked.
uint64_t elementBytes(const std::string &dtype) {
  static const struct { const char *name; uint64_t bytes; } table[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"F8_E8M0", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2}, {"BF16", 2},
      {"I32", 4}, {"U32", 4}, {"F32", 4}, {"I64", 8}, {"U64", 8}, {"F64", 8}};
  for (const auto &e : table)
    if (dtype == e.name)
      return e.bytes;
  return 0;
}

bool supportedDType(const std::string &name, DType *out) {
  static const DType all[] = {DType::F32, DType::BF16, DType::F16,
                              DType::F8E4M3};
  for (DType d : all)
    if (name == dtypeName(d)) {
      *out = d;
      return true;
    }
  return false;
}

std::string quote(const std::string &s) { return "'" + s + "'"; }

std::string joinPath(const std::string &dir, const std::string &name) {
  if (!dir.empty() && dir.back() == '/')
    return dir + name;
  return dir + "/" + name;
}

/// Reads a whole (small) file; false and `error` on failure.
bool readFile(const std::string &path, std::string *out, std::string *error) {
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f) {
    *error = path + ": cannot open: " + std::strerror(errno);
    return false;
  }
  out->clear();
  char buf[1 << 16];
  size_t n;
  bool ok = true;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    out->append(buf, n);
    if (out->size() > kMaxHeaderBytes) {
      *error = path + ": file is too large (limit 100 MB)";
      ok = false;
      break;
    }
  }
  if (ok && std::ferror(f)) {
    *error = path + ": read error";
    ok = false;
  }
  std::fclose(f);
  return ok;
}

} // namespace

//===----------------------------------------------------------------------===//
// Tensor
//===----------------------------------------------------------------------===//

const char *dsrt::dtypeName(DType dtype) {
  switch (dtype) {
  case DType::F32: return "F32";
  case DType::BF16: return "BF16";
  case DType::F16: return "F16";
  case DType::F8E4M3: return "F8_E4M3";
  }
  return "?";
}

std::string dsrt::shapeString(const int64_t *shape, int64_t rank) {
  std::string s = "[";
  for (int64_t i = 0; i < rank; ++i) {
    if (i)
      s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

std::string Tensor::shapeString() const {
  return dsrt::shapeString(shape.data(), int64_t(shape.size()));
}

//===----------------------------------------------------------------------===//
// SafetensorsFile
//===----------------------------------------------------------------------===//

std::unique_ptr<SafetensorsFile>
SafetensorsFile::open(const std::string &path, std::string *error) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = path + ": cannot open: " + std::strerror(errno);
    return nullptr;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    *error = path + ": not a regular file";
    ::close(fd);
    return nullptr;
  }
  file->size_ = uint64_t(st.st_size);
  if (file->size_ < 8) {
    *error = path + ": file is too short for a safetensors header (" +
             std::to_string(file->size_) + " bytes)";
    ::close(fd);
    return nullptr;
  }
  void *map = mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd); // the mapping keeps the file alive
  if (map == MAP_FAILED) {
    *error = path + ": cannot map: " + std::strerror(errno);
    return nullptr;
  }
  file->map_ = static_cast<const uint8_t *>(map);
  if (!file->parse(error))
    return nullptr;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_)
    munmap(const_cast<uint8_t *>(map_), size_);
}

const Tensor *SafetensorsFile::find(const std::string &name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

bool SafetensorsFile::parse(std::string *error) {
  const std::string &P = path_;
  uint64_t headerBytes = 0;
  for (int i = 7; i >= 0; --i)
    headerBytes = headerBytes << 8 | map_[i];
  if (headerBytes > kMaxHeaderBytes) {
    *error = P + ": header length " + std::to_string(headerBytes) +
             " is too large (limit 100 MB); not a safetensors file?";
    return false;
  }
  if (headerBytes > size_ - 8) {
    *error = P + ": header length " + std::to_string(headerBytes) +
             " runs past the end of the file (" + std::to_string(size_) +
             " bytes)";
    return false;
  }
  const uint8_t *data = map_ + 8 + headerBytes;
  const uint64_t dataBytes = size_ - 8 - headerBytes;

  Json root;
  std::string jsonError;
  if (!parseJson(reinterpret_cast<const char *>(map_ + 8), headerBytes, &root,
                 &jsonError)) {
    *error = P + ": malformed JSON header: " + jsonError;
    return false;
  }
  if (root.kind != Json::Object) {
    *error = P + ": malformed header: not a JSON object";
    return false;
  }

  for (size_t e = 0; e < root.keys.size(); ++e) {
    const std::string &name = root.keys[e];
    if (name == "__metadata__")
      continue; // free-form; not ours to judge
    const Json &entry = root.items[e];
    std::string T = P + ": tensor " + quote(name);
    if (entry.kind != Json::Object) {
      *error = T + ": entry is not a JSON object";
      return false;
    }
    const Json *dtype = entry.get("dtype");
    const Json *shape = entry.get("shape");
    const Json *offsets = entry.get("data_offsets");
    if (!dtype || !shape || !offsets) {
      *error = T + " has no " +
               (!dtype ? "dtype" : !shape ? "shape" : "data_offsets");
      return false;
    }
    if (dtype->kind != Json::String) {
      *error = T + ": dtype is not a string";
      return false;
    }
    Tensor t;
    t.name = name;
    t.dtypeName = dtype->string;
    t.supported = supportedDType(t.dtypeName, &t.dtype);
    t.file = this;

    if (shape->kind != Json::Array) {
      *error = T + ": shape is not an array of non-negative integers";
      return false;
    }
    // numel * element size must fit in uint64; track it with overflow checks.
    unsigned __int128 bytes = 1;
    uint64_t elem = elementBytes(t.dtypeName);
    for (const Json &d : shape->items) {
      if (d.kind != Json::Int || d.integer < 0) {
        *error = T + ": shape is not an array of non-negative integers";
        return false;
      }
      t.shape.push_back(d.integer);
      bytes *= uint64_t(d.integer);
      if (bytes > UINT64_MAX)
        bytes = (unsigned __int128)UINT64_MAX + 1; // saturate
    }

    if (offsets->kind != Json::Array || offsets->items.size() != 2 ||
        offsets->items[0].kind != Json::Int ||
        offsets->items[1].kind != Json::Int ||
        offsets->items[0].integer < 0 ||
        offsets->items[0].integer > offsets->items[1].integer) {
      *error = T + ": data_offsets must be [begin, end] with 0 <= begin <= end";
      return false;
    }
    uint64_t begin = uint64_t(offsets->items[0].integer);
    uint64_t end = uint64_t(offsets->items[1].integer);
    if (end > dataBytes) {
      *error = T + " ends at byte " + std::to_string(end) +
               " of a data section of " + std::to_string(dataBytes) +
               " bytes (truncated file?)";
      return false;
    }
    if (elem != 0 && bytes * elem != end - begin) {
      std::string need = bytes * elem > UINT64_MAX
                             ? std::string("more than 2^64")
                             : std::to_string(uint64_t(bytes * elem));
      *error = T + " has " + std::to_string(end - begin) + " bytes; dtype " +
               t.dtypeName + " and shape " + t.shapeString() + " need " + need;
      return false;
    }
    t.data = data + begin;
    t.bytes = end - begin;
    index_[name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  // Overlap: sort the non-empty extents by start; neighbours must not meet.
  std::vector<const Tensor *> order;
  for (const Tensor &t : tensors_)
    if (t.bytes)
      order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const Tensor *a, const Tensor *b) {
    return a->data < b->data;
  });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i - 1]->data + order[i - 1]->bytes > order[i]->data) {
      *error = P + ": tensors " + quote(order[i - 1]->name) + " and " +
               quote(order[i]->name) + " overlap";
      return false;
    }
  return true;
}

//===----------------------------------------------------------------------===//
// Checkpoint
//===----------------------------------------------------------------------===//

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string &path,
                                             std::string *error) {
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->path_ = path;
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    *error = path + ": " + std::strerror(errno);
    return nullptr;
  }
  if (S_ISDIR(st.st_mode)) {
    std::string index = joinPath(path, "model.safetensors.index.json");
    bool ok = access(index.c_str(), F_OK) == 0 ? ckpt->openIndex(index, error)
                                               : ckpt->openAll(error);
    if (!ok)
      return nullptr;
    return ckpt;
  }
  auto file = SafetensorsFile::open(path, error);
  if (!file)
    return nullptr;
  for (const Tensor &t : file->tensors())
    ckpt->tensors_[t.name] = &t;
  ckpt->files_.push_back(std::move(file));
  return ckpt;
}

bool Checkpoint::openIndex(const std::string &indexPath, std::string *error) {
  std::string text, jsonError;
  if (!readFile(indexPath, &text, error))
    return false;
  Json root;
  if (!parseJson(text.data(), text.size(), &root, &jsonError)) {
    *error = indexPath + ": malformed JSON: " + jsonError;
    return false;
  }
  const Json *map = root.kind == Json::Object ? root.get("weight_map") : nullptr;
  if (!map || map->kind != Json::Object) {
    *error = indexPath + ": no \"weight_map\" object";
    return false;
  }
  if (map->keys.empty()) {
    *error = indexPath + ": \"weight_map\" is empty";
    return false;
  }
  const std::string dir = path_;
  std::map<std::string, const SafetensorsFile *> opened;
  for (size_t i = 0; i < map->keys.size(); ++i) {
    const std::string &name = map->keys[i];
    const Json &file = map->items[i];
    std::string T = indexPath + ": tensor " + quote(name);
    // A shard is a relative path inside the checkpoint directory.
    if (file.kind != Json::String || file.string.empty() ||
        file.string[0] == '/' || ("/" + file.string + "/").find("/../") !=
                                     std::string::npos) {
      *error = T + " maps to " +
               (file.kind == Json::String ? quote(file.string)
                                          : std::string("a non-string")) +
               ", not a file name inside the directory";
      return false;
    }
    auto it = opened.find(file.string);
    if (it == opened.end()) {
      auto f = SafetensorsFile::open(joinPath(dir, file.string), error);
      if (!f)
        return false;
      it = opened.emplace(file.string, f.get()).first;
      files_.push_back(std::move(f));
    }
    const Tensor *t = it->second->find(name);
    if (!t) {
      *error = T + " maps to " + quote(file.string) +
               ", which does not contain it";
      return false;
    }
    tensors_[name] = t;
  }
  return true;
}

bool Checkpoint::openAll(std::string *error) {
  DIR *d = opendir(path_.c_str());
  if (!d) {
    *error = path_ + ": cannot read directory: " + std::strerror(errno);
    return false;
  }
  std::vector<std::string> names;
  const std::string suffix = ".safetensors";
  while (struct dirent *e = readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > suffix.size() &&
        n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      names.push_back(n);
  }
  closedir(d);
  // Sorted, so the files (and any duplicate message) do not depend on the
  // directory order.
  std::sort(names.begin(), names.end());
  if (names.empty()) {
    *error = path_ +
             ": no model.safetensors.index.json and no *.safetensors files";
    return false;
  }
  for (const std::string &n : names) {
    auto f = SafetensorsFile::open(joinPath(path_, n), error);
    if (!f)
      return false;
    for (const Tensor &t : f->tensors()) {
      auto ins = tensors_.emplace(t.name, &t);
      if (!ins.second) {
        *error = path_ + ": tensor " + quote(t.name) + " is in both " +
                 ins.first->second->file->path() + " and " + f->path();
        return false;
      }
    }
    files_.push_back(std::move(f));
  }
  return true;
}

const Tensor *Checkpoint::find(const std::string &name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

const Tensor *Checkpoint::get(const std::string &name,
                              std::string *error) const {
  const Tensor *t = find(name);
  if (!t) {
    *error = path_ + ": tensor " + quote(name) + " not found";
    return nullptr;
  }
  if (!t->supported) {
    *error = t->file->path() + ": tensor " + quote(name) +
             " has unsupported dtype " + t->dtypeName +
             " (supported: F32, BF16, F16, F8_E4M3)";
    return nullptr;
  }
  return t;
}
