//===- NpyTest.cpp - float32 .npy output ----------------------------------===//

#include "ds/Runtime/Npy.h"

#include "RuntimeTestUtil.h"

#include <sys/stat.h>

using namespace dsrt;
using namespace dsrt_test;

namespace {

TEST(Npy, WritesFormat10) {
  TempDir dir;
  std::string path = dir.file("logits.npy");
  const float data[6] = {1.0f, -2.0f, 0.5f, 3.25f, -0.0f, 1e30f};
  std::string error;
  ASSERT_TRUE(writeNpy(path, data, 2, 3, &error)) << error;

  std::string bytes = readBytes(path);
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  size_t headerLen = uint8_t(bytes[8]) | uint8_t(bytes[9]) << 8;
  EXPECT_EQ((10 + headerLen) % 64, 0u); // data 64-byte aligned
  std::string header = bytes.substr(10, headerLen);
  std::string dict =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  EXPECT_EQ(header.substr(0, dict.size()), dict);
  EXPECT_EQ(header.back(), '\n');
  EXPECT_EQ(header.find_first_not_of(' ', dict.size()), headerLen - 1);
  ASSERT_EQ(bytes.size(), 10 + headerLen + sizeof data);
  EXPECT_EQ(std::memcmp(bytes.data() + 10 + headerLen, data, sizeof data), 0);
  // No temporary left behind.
  EXPECT_EQ(listDir(dir.path()), std::vector<std::string>{"logits.npy"});
}

TEST(Npy, ReplacesExistingFileAndHandlesEmpty) {
  TempDir dir;
  std::string path = dir.file("x.npy");
  writeBytes(path, std::string(1000, 'z'));
  std::string error;
  ASSERT_TRUE(writeNpy(path, nullptr, 0, 7, &error)) << error;
  std::string bytes = readBytes(path);
  EXPECT_EQ(bytes.size(), 128u); // the header alone, padded to 64 bytes
  EXPECT_NE(bytes.find("'shape': (0, 7)"), std::string::npos);
}

TEST(Npy, FailureLeavesNothing) {
  TempDir dir;
  float v = 1.0f;
  std::string error;
  std::string missing = dir.file("no/such/dir/out.npy");
  EXPECT_FALSE(writeNpy(missing, &v, 1, 1, &error));
  EXPECT_EQ(error.rfind(missing + ": cannot create a temporary file: ", 0), 0u)
      << error;

  // The final rename fails (the target is a non-empty directory): the
  // temporary is removed and the directory is untouched.
  std::string target = dir.file("taken.npy");
  ASSERT_EQ(mkdir(target.c_str(), 0755), 0);
  writeBytes(target + "/keep", "k");
  error.clear();
  EXPECT_FALSE(writeNpy(target, &v, 1, 1, &error));
  EXPECT_EQ(error.rfind(target + ": cannot write: ", 0), 0u) << error;
  EXPECT_EQ(listDir(dir.path()), std::vector<std::string>{"taken.npy"});
  EXPECT_EQ(listDir(target), std::vector<std::string>{"keep"});
}

TEST(Npy, WriterStreamsRows) {
  TempDir dir;
  const float data[6] = {1.0f, -2.0f, 0.5f, 3.25f, -0.0f, 1e30f};
  std::string error;
  ASSERT_TRUE(writeNpy(dir.file("whole.npy"), data, 3, 2, &error)) << error;
  {
    NpyWriter w;
    ASSERT_TRUE(w.open(dir.file("rows.npy"), 3, 2, &error)) << error;
    ASSERT_TRUE(w.append(data, 1, &error)) << error;
    ASSERT_TRUE(w.append(data + 2, 2, &error)) << error;
    // Nothing at the path until the commit.
    EXPECT_EQ(listDir(dir.path()).size(), 2u);
    ASSERT_TRUE(w.commit(&error)) << error;
  }
  EXPECT_EQ(readBytes(dir.file("rows.npy")), readBytes(dir.file("whole.npy")));
  EXPECT_EQ(listDir(dir.path()),
            (std::vector<std::string>{"rows.npy", "whole.npy"}));
}

TEST(Npy, WriterLeavesNothingUnlessComplete) {
  TempDir dir;
  const float row[2] = {1.0f, 2.0f};
  std::string error;
  const std::string path = dir.file("d.npy");
  {
    NpyWriter w; // destroyed before its commit
    ASSERT_TRUE(w.open(path, 2, 2, &error)) << error;
    ASSERT_TRUE(w.append(row, 1, &error)) << error;
  }
  EXPECT_TRUE(listDir(dir.path()).empty());

  NpyWriter w;
  ASSERT_TRUE(w.open(path, 2, 2, &error)) << error;
  ASSERT_TRUE(w.append(row, 1, &error)) << error;
  EXPECT_FALSE(w.commit(&error));
  EXPECT_EQ(error, path + ": 1 of 2 rows written");
  EXPECT_FALSE(w.isOpen());
  EXPECT_TRUE(listDir(dir.path()).empty());

  ASSERT_TRUE(w.open(path, 1, 2, &error)) << error;
  EXPECT_FALSE(w.append(row, 2, &error));
  EXPECT_EQ(error, path + ": 2 rows appended with 1 left");
  EXPECT_FALSE(w.append(row, 1, &error));
  EXPECT_EQ(error, path + ": not open");
  EXPECT_TRUE(listDir(dir.path()).empty());
}

} // namespace
