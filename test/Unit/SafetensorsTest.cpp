//===- SafetensorsTest.cpp - safetensors reader and checkpoint lookup -----===//

#include "ds/Runtime/Safetensors.h"

#include "RuntimeTestUtil.h"

#include <sys/stat.h>

using namespace dsrt;
using namespace dsrt_test;

namespace {

/// Opens `path`, expects failure, returns the message.
std::string openError(const std::string &path) {
  std::string error;
  auto f = SafetensorsFile::open(path, &error);
  EXPECT_EQ(f, nullptr) << path << " opened";
  EXPECT_FALSE(error.empty());
  return error;
}

std::string checkpointError(const std::string &path) {
  std::string error;
  auto c = Checkpoint::open(path, &error);
  EXPECT_EQ(c, nullptr) << path << " opened";
  EXPECT_FALSE(error.empty());
  return error;
}

/// A file whose header is `header` and whose data section has `dataBytes`
/// zero bytes; returns the message of opening it.
std::string headerError(const TempDir &dir, const std::string &header,
                        size_t dataBytes = 64) {
  std::string path = dir.file("bad.safetensors");
  writeBytes(path, safetensorsBytes(header, std::string(dataBytes, '\0')));
  return openError(path);
}

#define EXPECT_HAS(haystack, needle)                                           \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos)             \
      << "message: " << (haystack) << "\nexpected to contain: " << (needle)

TEST(Safetensors, GoodFileWithEachDType) {
  TempDir dir;
  std::string path = dir.file("good.safetensors");
  writeSafetensors(
      path,
      {{"f32", "F32", {2, 3}, rawBytes(std::vector<float>{1, 2, 3, 4, 5, 6})},
       {"bf16", "BF16", {2}, rawBytes(std::vector<uint16_t>{0x3F80, 0xC000})},
       {"f16", "F16", {1, 2}, rawBytes(std::vector<uint16_t>{0x3C00, 0x0001})},
       {"f8", "F8_E4M3", {3}, std::string("\x38\x00\x7e", 3)},
       {"empty", "F32", {0, 4}, ""}},
      R"({"format": "pt", "note": "ignored"})");
  std::string error;
  auto f = SafetensorsFile::open(path, &error);
  ASSERT_NE(f, nullptr) << error;
  EXPECT_EQ(f->path(), path);
  ASSERT_EQ(f->tensors().size(), 5u);

  const Tensor *t = f->find("f32");
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(t->supported);
  EXPECT_EQ(t->dtype, DType::F32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t->numel(), 6);
  EXPECT_EQ(t->bytes, 24u);
  EXPECT_EQ(t->file, f.get());
  float v[6];
  std::memcpy(v, t->data, 24);
  EXPECT_EQ(v[5], 6.0f);
  EXPECT_EQ(t->shapeString(), "[2, 3]");

  EXPECT_EQ(f->find("bf16")->dtype, DType::BF16);
  EXPECT_EQ(f->find("f16")->dtype, DType::F16);
  t = f->find("f8");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::F8E4M3);
  EXPECT_EQ(t->dtypeName, "F8_E4M3");
  EXPECT_EQ(t->bytes, 3u);
  EXPECT_EQ(t->data[2], 0x7e);
  EXPECT_EQ(f->find("empty")->numel(), 0);
  EXPECT_EQ(f->find("__metadata__"), nullptr);
  EXPECT_EQ(f->find("missing"), nullptr);
}

TEST(Safetensors, JsonEscapesAndWhitespace) {
  TempDir dir;
  std::string path = dir.file("esc.safetensors");
  // "a\"b\\/é😀\n" spelled with escapes, whitespace everywhere, and
  // true/false/null in the metadata.
  std::string header =
      " {\n \"__metadata__\" : {\"x\": [true, false, null, -3, 0]},\n"
      " \"a\\\"b\\\\\\/\\u00e9\\ud83d\\ude00\\n\" : { \"dtype\" : \"F32\" ,"
      " \"shape\" : [ 1 ] , \"data_offsets\" : [ 0 , 4 ] } }\t\r\n ";
  writeBytes(path, safetensorsBytes(header, std::string(4, '\0')));
  std::string error;
  auto f = SafetensorsFile::open(path, &error);
  ASSERT_NE(f, nullptr) << error;
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->tensors()[0].name, "a\"b\\/\xC3\xA9\xF0\x9F\x98\x80\n");
}

TEST(Safetensors, FileTooShort) {
  TempDir dir;
  std::string path = dir.file("short.safetensors");
  writeBytes(path, "abc");
  std::string e = openError(path);
  EXPECT_HAS(e, path + ": ");
  EXPECT_HAS(e, "too short");
  writeBytes(path, "");
  EXPECT_HAS(openError(path), "too short");
}

TEST(Safetensors, HeaderLengthPastEnd) {
  TempDir dir;
  std::string path = dir.file("h.safetensors");
  std::string bytes = safetensorsBytes("{}", "");
  bytes[0] = 100; // claims 100 header bytes, has 2
  writeBytes(path, bytes);
  std::string e = openError(path);
  EXPECT_HAS(e, path + ": header length 100 runs past the end of the file");
}

TEST(Safetensors, HeaderLengthAbsurd) {
  TempDir dir;
  std::string path = dir.file("h.safetensors");
  std::string bytes = safetensorsBytes("{}", "");
  bytes[5] = 1; // 2^40 + 2
  writeBytes(path, bytes);
  std::string e = openError(path);
  EXPECT_HAS(e, path + ": header length 1099511627778 is too large");
}

TEST(Safetensors, MalformedJson) {
  TempDir dir;
  const char *bad[] = {
      "",                                   // nothing
      "{",                                  // truncated
      "{\"a\":}",                           // missing value
      "{\"a\":1,}",                         // trailing comma
      "{\"a\" 1}",                          // missing colon
      "{a:1}",                              // unquoted key
      "{\"a\":\"x}",                        // unterminated string
      "{\"a\":\"\\q\"}",                    // bad escape
      "{\"a\":\"\\u12\"}",                  // short \u
      "{\"a\":\"\\ud800\"}",                // lone surrogate
      "{\"a\":\"x\ny\"}",                   // raw control character
      "{\"a\":1.5}",                        // not an integer
      "{\"a\":1e3}",                        // not an integer
      "{\"a\":01}",                         // leading zero
      "{\"a\":-}",                          // bare minus
      "{\"a\":99999999999999999999}",       // out of range
      "{\"a\":tru}",                        // bad literal
      "{\"a\":1}x",                         // trailing garbage
      "{\"a\":1,\"a\":2}",                  // duplicate key
      "{\"a\":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]}", // too deep
  };
  for (const char *header : bad) {
    std::string e = headerError(dir, header);
    EXPECT_HAS(e, dir.file("bad.safetensors") + ": malformed JSON header: ")
        << "header: " << header;
  }
  EXPECT_HAS(headerError(dir, "{\"a\":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]}"),
             "nested too deeply");
  EXPECT_HAS(headerError(dir, "{\"a\":1,\"a\":2}"), "duplicate key 'a'");
  EXPECT_HAS(headerError(dir, "[1, 2]"), "not a JSON object");
}

TEST(Safetensors, EntryFieldsMissing) {
  TempDir dir;
  std::string p = dir.file("bad.safetensors");
  EXPECT_HAS(headerError(dir, R"({"w":{"shape":[1],"data_offsets":[0,4]}})"),
             p + ": tensor 'w' has no dtype");
  EXPECT_HAS(headerError(dir, R"({"w":{"dtype":"F32","data_offsets":[0,4]}})"),
             p + ": tensor 'w' has no shape");
  EXPECT_HAS(headerError(dir, R"({"w":{"dtype":"F32","shape":[1]}})"),
             p + ": tensor 'w' has no data_offsets");
  EXPECT_HAS(headerError(dir, R"({"w":[1]})"),
             p + ": tensor 'w': entry is not a JSON object");
  EXPECT_HAS(
      headerError(dir, R"({"w":{"dtype":1,"shape":[1],"data_offsets":[0,4]}})"),
      p + ": tensor 'w': dtype is not a string");
  EXPECT_HAS(headerError(
                 dir, R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})"),
             p + ": tensor 'w': shape is not an array of non-negative integers");
  EXPECT_HAS(headerError(
                 dir, R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})"),
             "shape is not an array");
}

TEST(Safetensors, BadDataOffsets) {
  TempDir dir;
  const char *bad[] = {
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})",
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}})",
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})",
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})",
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":"0,4"}})",
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})",
  };
  for (const char *header : bad)
    EXPECT_HAS(headerError(dir, header),
               dir.file("bad.safetensors") +
                   ": tensor 'w': data_offsets must be [begin, end]")
        << "header: " << header;
}

TEST(Safetensors, TruncatedData) {
  TempDir dir;
  std::string e = headerError(
      dir, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 12);
  EXPECT_HAS(e, dir.file("bad.safetensors") +
                    ": tensor 'w' ends at byte 16 of a data section of 12 "
                    "bytes (truncated file?)");
  // The same through a writer that then loses the file's tail.
  std::string path = dir.file("cut.safetensors");
  writeSafetensors(path, {{"a", "F32", {2}, std::string(8, '\1')},
                          {"b", "BF16", {8}, std::string(16, '\2')}});
  std::string bytes = readBytes(path);
  writeBytes(path, bytes.substr(0, bytes.size() - 1));
  EXPECT_HAS(openError(path), path + ": tensor 'b' ends at byte 24");
}

TEST(Safetensors, SizeDoesNotMatchShape) {
  TempDir dir;
  EXPECT_HAS(headerError(
                 dir, R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,10]}})"),
             dir.file("bad.safetensors") +
                 ": tensor 'w' has 10 bytes; dtype BF16 and shape [2, 3] need "
                 "12");
  EXPECT_HAS(
      headerError(
          dir,
          R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})"),
      "need more than 2^64");
  // The sizes of dtypes we do not load are checked too.
  EXPECT_HAS(headerError(
                 dir, R"({"w":{"dtype":"I64","shape":[2],"data_offsets":[0,8]}})"),
             "tensor 'w' has 8 bytes; dtype I64 and shape [2] need 16");
}

TEST(Safetensors, OverlappingTensors) {
  TempDir dir;
  EXPECT_HAS(
      headerError(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                           "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})"),
      dir.file("bad.safetensors") + ": tensors 'a' and 'b' overlap");
  // Listed out of order, still found.
  EXPECT_HAS(
      headerError(dir, R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},
                           "c":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                           "a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})"),
      "tensors 'a' and 'b' overlap");
  // Adjacent tensors and empty ones do not overlap.
  std::string path = dir.file("ok.safetensors");
  writeBytes(path, safetensorsBytes(
                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                           "e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},
                           "b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                       std::string(16, '\0')));
  std::string error;
  EXPECT_NE(SafetensorsFile::open(path, &error), nullptr) << error;
}

TEST(Safetensors, NotAFile) {
  TempDir dir;
  std::string e = openError(dir.file("nope.safetensors"));
  EXPECT_HAS(e, dir.file("nope.safetensors") + ": cannot open");
  EXPECT_HAS(openError(dir.path()), dir.path() + ": not a regular file");
}

TEST(Checkpoint, SingleFileLookup) {
  TempDir dir;
  std::string path = dir.file("m.safetensors");
  writeSafetensors(path, {{"w", "F32", {1}, std::string(4, '\0')},
                          {"ids", "I64", {2}, std::string(16, '\0')}});
  std::string error;
  auto c = Checkpoint::open(path, &error);
  ASSERT_NE(c, nullptr) << error;
  EXPECT_EQ(c->files().size(), 1u);
  const Tensor *t = c->get("w", &error);
  ASSERT_NE(t, nullptr) << error;
  EXPECT_EQ(t->file->path(), path);

  EXPECT_EQ(c->get("x", &error), nullptr);
  EXPECT_EQ(error, path + ": tensor 'x' not found");

  // Unsupported dtypes load fine until a tensor of one is asked for.
  EXPECT_NE(c->find("ids"), nullptr);
  EXPECT_FALSE(c->find("ids")->supported);
  EXPECT_EQ(c->get("ids", &error), nullptr);
  EXPECT_EQ(error, path + ": tensor 'ids' has unsupported dtype I64 "
                          "(supported: F32, BF16, F16, F8_E4M3)");
}

TEST(Checkpoint, IndexDirectory) {
  TempDir dir;
  writeSafetensors(dir.file("model-00001-of-00002.safetensors"),
                   {{"a", "F32", {1}, rawBytes(std::vector<float>{1})},
                    {"unlisted", "F32", {1}, rawBytes(std::vector<float>{9})}});
  writeSafetensors(dir.file("model-00002-of-00002.safetensors"),
                   {{"b", "BF16", {1}, rawBytes(std::vector<uint16_t>{0x4000})}});
  // A stray file that the index does not name is not read.
  writeBytes(dir.file("junk.safetensors"), "junk");
  writeBytes(dir.file("model.safetensors.index.json"),
             R"({"metadata": {"total_size": 6},
                 "weight_map": {"a": "model-00001-of-00002.safetensors",
                                "b": "model-00002-of-00002.safetensors"}})");
  std::string error;
  auto c = Checkpoint::open(dir.path(), &error);
  ASSERT_NE(c, nullptr) << error;
  EXPECT_EQ(c->files().size(), 2u);
  const Tensor *a = c->get("a", &error);
  const Tensor *b = c->get("b", &error);
  ASSERT_TRUE(a && b) << error;
  EXPECT_EQ(a->file->path(), dir.file("model-00001-of-00002.safetensors"));
  EXPECT_EQ(b->file->path(), dir.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(b->dtype, DType::BF16);
  // The index is the authority on what the checkpoint holds.
  EXPECT_EQ(c->get("unlisted", &error), nullptr);
  EXPECT_EQ(error, dir.path() + ": tensor 'unlisted' not found");
}

TEST(Checkpoint, BadIndex) {
  TempDir dir;
  std::string index = dir.file("model.safetensors.index.json");
  writeSafetensors(dir.file("s.safetensors"), {{"a", "F32", {1}, std::string(4, '\0')}});

  writeBytes(index, "{\"weight_map\": {\"a\": \"s.safetensors\",}}");
  EXPECT_HAS(checkpointError(dir.path()), index + ": malformed JSON: ");

  writeBytes(index, R"({"metadata": {}})");
  EXPECT_HAS(checkpointError(dir.path()), index + ": no \"weight_map\" object");

  writeBytes(index, R"({"weight_map": {}})");
  EXPECT_HAS(checkpointError(dir.path()), index + ": \"weight_map\" is empty");

  writeBytes(index, R"({"weight_map": {"a": 3}})");
  EXPECT_HAS(checkpointError(dir.path()),
             index + ": tensor 'a' maps to a non-string");

  writeBytes(index, R"({"weight_map": {"a": "../s.safetensors"}})");
  EXPECT_HAS(checkpointError(dir.path()),
             index + ": tensor 'a' maps to '../s.safetensors', not a file "
                     "name inside the directory");

  writeBytes(index, R"({"weight_map": {"a": "/etc/passwd"}})");
  EXPECT_HAS(checkpointError(dir.path()), "not a file name inside");

  writeBytes(index, R"({"weight_map": {"a": "missing.safetensors"}})");
  EXPECT_HAS(checkpointError(dir.path()),
             dir.file("missing.safetensors") + ": cannot open");

  writeBytes(index, R"({"weight_map": {"b": "s.safetensors"}})");
  EXPECT_HAS(checkpointError(dir.path()),
             index + ": tensor 'b' maps to 's.safetensors', which does not "
                     "contain it");

  // A bad shard fails the whole checkpoint, naming the shard.
  writeBytes(dir.file("t.safetensors"), "1234567");
  writeBytes(index, R"({"weight_map": {"a": "s.safetensors", "t": "t.safetensors"}})");
  EXPECT_HAS(checkpointError(dir.path()),
             dir.file("t.safetensors") + ": file is too short");
}

TEST(Checkpoint, DirectoryOfFiles) {
  TempDir dir;
  writeSafetensors(dir.file("b.safetensors"), {{"x", "F32", {1}, std::string(4, '\0')}});
  writeSafetensors(dir.file("a.safetensors"), {{"y", "F16", {2}, std::string(4, '\0')}});
  writeBytes(dir.file("README.md"), "not a checkpoint");
  std::string error;
  auto c = Checkpoint::open(dir.path() + "/", &error);
  ASSERT_NE(c, nullptr) << error;
  ASSERT_EQ(c->files().size(), 2u);
  EXPECT_EQ(c->files()[0]->path(), dir.file("a.safetensors")); // sorted
  ASSERT_NE(c->get("x", &error), nullptr) << error;
  ASSERT_NE(c->get("y", &error), nullptr) << error;
  EXPECT_EQ(c->get("x", &error)->file->path(), dir.file("b.safetensors"));
}

TEST(Checkpoint, TensorInTwoFiles) {
  TempDir dir;
  writeSafetensors(dir.file("a.safetensors"), {{"x", "F32", {1}, std::string(4, '\0')}});
  writeSafetensors(dir.file("b.safetensors"), {{"x", "F32", {1}, std::string(4, '\0')}});
  EXPECT_EQ(checkpointError(dir.path()),
            dir.path() + ": tensor 'x' is in both " + dir.file("a.safetensors") +
                " and " + dir.file("b.safetensors"));
}

TEST(Checkpoint, EmptyOrMissing) {
  TempDir dir;
  EXPECT_EQ(checkpointError(dir.path()),
            dir.path() +
                ": no model.safetensors.index.json and no *.safetensors files");
  EXPECT_EQ(checkpointError(dir.file("missing")),
            dir.file("missing") + ": No such file or directory");
}

} // namespace
