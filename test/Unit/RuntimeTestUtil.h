//===- RuntimeTestUtil.h - temp dirs and safetensors writers for tests ----===//
//
// Writes checkpoints byte by byte, independently of the reader under test.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TEST_UNIT_RUNTIMETESTUTIL_H
#define DS_TEST_UNIT_RUNTIMETESTUTIL_H

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <ftw.h>
#include <unistd.h>

namespace dsrt_test {

/// A fresh directory, removed with its contents at the end of the test.
class TempDir {
public:
  TempDir() {
    std::string base = ::testing::TempDir();
    if (base.empty() || base.back() != '/')
      base += '/';
    std::string tmpl = base + "dsrt_test_XXXXXX";
    char *p = mkdtemp(&tmpl[0]);
    EXPECT_NE(p, nullptr) << "mkdtemp " << tmpl;
    path_ = tmpl;
  }
  ~TempDir() {
    nftw(
        path_.c_str(),
        [](const char *p, const struct stat *, int, struct FTW *) {
          return std::remove(p);
        },
        16, FTW_DEPTH | FTW_PHYS);
  }
  const std::string &path() const { return path_; }
  std::string file(const std::string &name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

inline void writeBytes(const std::string &path, const std::string &bytes) {
  FILE *f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
}

inline std::string readBytes(const std::string &path) {
  std::string out;
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f)
    return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
    out.append(buf, n);
  std::fclose(f);
  return out;
}

/// 8-byte little-endian header length, the header, the data section.
inline std::string safetensorsBytes(const std::string &header,
                                    const std::string &data) {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    out.push_back(char((n >> (8 * i)) & 0xFF));
  return out + header + data;
}

/// One tensor for writeSafetensors: its raw little-endian bytes.
struct RawTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

template <class T> std::string rawBytes(const std::vector<T> &values) {
  return std::string(reinterpret_cast<const char *>(values.data()),
                     values.size() * sizeof(T));
}

/// A well-formed file: tensors laid out back to back in the given order.
inline void writeSafetensors(const std::string &path,
                             const std::vector<RawTensor> &tensors,
                             const std::string &metadata = "") {
  std::string header = "{", data;
  if (!metadata.empty())
    header += "\"__metadata__\":" + metadata + ",";
  for (size_t i = 0; i < tensors.size(); ++i) {
    const RawTensor &t = tensors[i];
    if (i)
      header += ",";
    header += "\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
    for (size_t d = 0; d < t.shape.size(); ++d)
      header += (d ? "," : "") + std::to_string(t.shape[d]);
    header += "],\"data_offsets\":[" + std::to_string(data.size()) + "," +
              std::to_string(data.size() + t.bytes.size()) + "]}";
    data += t.bytes;
  }
  header += "}";
  // Pad to 8 like the reference writer, so data are aligned.
  while (header.size() % 8)
    header += ' ';
  writeBytes(path, safetensorsBytes(header, data));
}

} // namespace dsrt_test

#endif // DS_TEST_UNIT_RUNTIMETESTUTIL_H
