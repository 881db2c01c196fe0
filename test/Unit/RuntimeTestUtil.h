//===- RuntimeTestUtil.h - temp dirs and safetensors writers for tests ----===//
//
// Writes checkpoints byte by byte, independently of the reader under test.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TEST_UNIT_RUNTIMETESTUTIL_H
#define DS_TEST_UNIT_RUNTIMETESTUTIL_H

#include "ds/Runtime/Runtime.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include <dirent.h>
#include <ftw.h>
#include <unistd.h>

namespace dsrt_test {

/// A RoPE table spec without YaRN.
inline dsrt::RopeSpec plainRope(int64_t dim, double theta = 10000.0) {
  dsrt::RopeSpec r{};
  r.dim = dim;
  r.theta = theta;
  r.yarn = false;
  r.factor = 1.0;
  r.originalMaxPositionEmbeddings = 4096;
  r.betaFast = 32;
  r.betaSlow = 1;
  r.mscale = 1;
  r.mscaleAllDim = 1;
  return r;
}

/// n uniform floats in [lo, hi), deterministic per seed.
inline std::vector<float> randomVector(size_t n, uint32_t seed, float lo = -1.0f,
                                       float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float &x : v)
    x = dist(gen);
  return v;
}

/// DeepSeek-V3-style routing: sigmoid, noaux_tc, 4 groups (2 kept), top-4.
inline dsrt::MoERouting v3Routing(int64_t experts) {
  dsrt::MoERouting r;
  r.experts = experts;
  r.topK = 4;
  r.nGroup = 4;
  r.topkGroup = 2;
  r.scoring = dsrt::MoERouting::Sigmoid;
  r.method = dsrt::MoERouting::NoauxTC;
  r.normTopk = true;
  r.scale = 2.5;
  return r;
}

/// A small ModelSpec over weights added one by one (names kept alive here):
/// vocab 16, hidden 8, two cache layers of 12 + 8, 64 positions.
struct SpecBuilder {
  std::deque<std::string> names;
  std::vector<dsrt::WeightSpec> ws;
  std::vector<dsrt::RopeSpec> ropes{plainRope(8)};
  dsrt::ModelSpec spec{};

  int64_t add(const std::string &name, int64_t rows, int64_t cols,
              dsrt::DType dtype, uint32_t flags = 0) {
    names.push_back(name);
    ws.push_back(
        {names.back().c_str(), cols ? 2 : 1, {rows, cols}, dtype, flags});
    return int64_t(ws.size()) - 1;
  }
  const dsrt::ModelSpec &finish() {
    spec.name = "test";
    spec.vocabSize = 16;
    spec.hiddenSize = 8;
    spec.weights = ws.data();
    spec.numWeights = int64_t(ws.size());
    spec.ropes = ropes.data();
    spec.numRopes = int64_t(ropes.size());
    spec.cacheLayers = 2;
    spec.kvLoraRank = 12;
    spec.qkRopeDim = 8;
    spec.maxSeqLen = 64;
    spec.arenaBytes = 64;
    return spec;
  }
};


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

/// The entries of directory `path` (without "." and ".."), sorted.
inline std::vector<std::string> listDir(const std::string &path) {
  std::vector<std::string> names;
  if (DIR *d = opendir(path.c_str())) {
    while (struct dirent *e = readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..")
        names.push_back(e->d_name);
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

} // namespace dsrt_test

#endif // DS_TEST_UNIT_RUNTIMETESTUTIL_H
