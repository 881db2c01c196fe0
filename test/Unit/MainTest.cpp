//===- MainTest.cpp - the executable's command line (runMain) -------------===//
//
// runMain over a fake model whose programs make the next token a known
// function of (id, position), so the generation loop is checked exactly.
//
//===----------------------------------------------------------------------===//

#include "ds/Runtime/Runtime.h"

#include "RuntimeTestUtil.h"

#include <regex>

using namespace dsrt;
using namespace dsrt_test;

namespace {

constexpr int64_t kVocab = 16;

int32_t nextToken(int32_t id, int32_t pos) { return (id * 3 + pos) % kVocab; }

std::vector<int32_t> decodePositions;

/// Row i: 1 at nextToken(ids[i], pos[i]) and, as a tie, at the index after
/// it (the lower index must win); 0 elsewhere.
void fakeRows(const int32_t *ids, const int32_t *pos, int64_t n,
              float *logits) {
  for (int64_t i = 0; i < n; ++i) {
    float *row = logits + i * kVocab;
    for (int64_t v = 0; v < kVocab; ++v)
      row[v] = 0.0f;
    int32_t t = nextToken(ids[i], pos[i]);
    row[t] = 1.0f;
    if (t + 1 < kVocab)
      row[t + 1] = 1.0f;
  }
}
void fakePrefill(Context &, const int32_t *ids, const int32_t *pos, int64_t n,
                 float *logits) {
  for (int64_t i = 0; i < n; ++i)
    EXPECT_EQ(pos[i], i);
  fakeRows(ids, pos, n, logits);
}
void fakeDecode(Context &ctx, const int32_t *ids, const int32_t *pos,
                int64_t n, float *logits) {
  EXPECT_EQ(n, 1);
  EXPECT_NE(ctx.weight(0), nullptr);
  decodePositions.push_back(pos[0]);
  fakeRows(ids, pos, n, logits);
}

const WeightSpec kWeights[] = {{"w", 2, {2, 2}, DType::F32}};

ModelSpec fakeSpec() {
  ModelSpec s{};
  s.name = "fake-model";
  s.vocabSize = kVocab;
  s.hiddenSize = 2;
  s.weights = kWeights;
  s.numWeights = 1;
  s.maxSeqLen = 32;
  s.arenaBytes = 64;
  s.prefill = fakePrefill;
  s.prefillMaxTokens = 12;
  s.decode = fakeDecode;
  s.decodeMaxTokens = 1;
  return s;
}

struct Result {
  int code;
  std::string out, err;
};

Result run(std::vector<std::string> args) {
  static const ModelSpec spec = fakeSpec();
  args.insert(args.begin(), "model");
  std::vector<char *> argv;
  for (std::string &a : args)
    argv.push_back(&a[0]);
  argv.push_back(nullptr);
  decodePositions.clear();
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  Result r;
  r.code = runMain(int(args.size()), argv.data(), spec);
  r.out = ::testing::internal::GetCapturedStdout();
  r.err = ::testing::internal::GetCapturedStderr();
  return r;
}

std::string expectedTokens(std::vector<int32_t> prompt, int64_t count) {
  std::string line = "tokens:";
  int32_t tok = 0, pos = int32_t(prompt.size()) - 1;
  for (int64_t i = 0; i < count; ++i, ++pos) {
    tok = nextToken(i == 0 ? prompt.back() : tok, pos);
    line += " " + std::to_string(tok);
  }
  return line + "\n";
}

const std::regex kTiming(
    "timing: prefill [0-9]+ tokens in [0-9]+\\.[0-9]{2} ms \\([0-9]+\\.[0-9] "
    "tok/s\\), decode [0-9]+ tokens in [0-9]+\\.[0-9]{2} ms \\([0-9]+\\.[0-9] "
    "tok/s\\)\n");

TEST(Main, DefaultsGreedy) {
  Result r = run({});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  size_t nl = r.out.find('\n');
  ASSERT_NE(nl, std::string::npos);
  EXPECT_EQ(r.out.substr(0, nl + 1),
            expectedTokens({1, 2, 3, 4, 5, 6, 7, 8}, 16));
  std::string timing = r.out.substr(nl + 1);
  EXPECT_TRUE(std::regex_match(timing, kTiming)) << timing;
  EXPECT_NE(timing.find("prefill 8 tokens"), std::string::npos);
  EXPECT_NE(timing.find("decode 15 tokens"), std::string::npos);
  std::vector<int32_t> positions;
  for (int32_t p = 8; p < 23; ++p)
    positions.push_back(p);
  EXPECT_EQ(decodePositions, positions);
}

TEST(Main, FlagsBothForms) {
  Result r = run({"--prompt-ids=3,4", "--max-new-tokens", "3", "--seed=5",
                  "--threads", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, r.out.find('\n') + 1), expectedTokens({3, 4}, 3));
  r = run({"--max-new-tokens=1"});
  EXPECT_EQ(r.out.substr(0, r.out.find('\n') + 1),
            expectedTokens({1, 2, 3, 4, 5, 6, 7, 8}, 1));
  EXPECT_TRUE(decodePositions.empty());
}

TEST(Main, ZeroNewTokens) {
  Result r = run({"--max-new-tokens", "0"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, r.out.find('\n') + 1), "tokens:\n");
  EXPECT_NE(r.out.find("decode 0 tokens in 0.00 ms (0.0 tok/s)"),
            std::string::npos)
      << r.out;
}

TEST(Main, DumpLogits) {
  TempDir dir;
  std::string path = dir.file("l.npy");
  Result r = run({"--prompt-ids", "1,5,9", "--dump-logits", path,
                  "--max-new-tokens", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::string bytes = readBytes(path);
  ASSERT_EQ(bytes.size(), 128u + 3 * kVocab * 4);
  EXPECT_NE(bytes.find("'shape': (3, 16)"), std::string::npos);
  std::vector<float> want(3 * kVocab);
  int32_t ids[3] = {1, 5, 9}, pos[3] = {0, 1, 2};
  fakeRows(ids, pos, 3, want.data());
  EXPECT_EQ(std::memcmp(bytes.data() + 128, want.data(), want.size() * 4), 0);

  r = run({"--dump-logits", dir.file("none/l.npy")});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("error: " + dir.file("none/l.npy") + ": ", 0), 0u)
      << r.err;
}

TEST(Main, Help) {
  Result r = run({"--max-new-tokens", "2", "--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("usage: model [options]"), std::string::npos);
  EXPECT_NE(r.out.find("'fake-model': vocab size 16, at\nmost 32 positions"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("prompts of at most 12"), std::string::npos);
  EXPECT_EQ(r.err, "");
}

TEST(Main, UsageErrors) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{"--foo"}, "unknown flag '--foo' (see --help)"},
      {{"--foo=1"}, "unknown flag '--foo' (see --help)"},
      {{"extra"}, "unexpected argument 'extra' (see --help)"},
      {{"--seed"}, "--seed: missing value"},
      {{"--weights", "--seed", "1"}, "--weights: missing value"},
      {{"--dump-logits="}, "--dump-logits: missing value"},
      {{"--help=yes"}, "--help takes no value"},
      {{"--seed", "x1"}, "--seed: expected a non-negative integer, got 'x1'"},
      {{"--seed", "-1"}, "--seed: expected a non-negative integer, got '-1'"},
      {{"--seed=18446744073709551616"},
       "--seed: expected a non-negative integer, got "
       "'18446744073709551616'"},
      {{"--threads", "0"},
       "--threads: expected an integer from 1 to 4096, got '0'"},
      {{"--max-new-tokens", "2.5"},
       "--max-new-tokens: expected a non-negative integer, got '2.5'"},
      {{"--prompt-ids="}, "--prompt-ids: the prompt is empty"},
      {{"--prompt-ids", ""}, "--prompt-ids: the prompt is empty"},
      {{"--prompt-ids", "1,,2"},
       "--prompt-ids: '' is not a token id (expected comma-separated "
       "non-negative integers)"},
      {{"--prompt-ids", "1, 2"}, "--prompt-ids: ' 2' is not a token id"},
      {{"--prompt-ids", "3,16"},
       "--prompt-ids: token id 16 is out of range for vocab size 16"},
      {{"--prompt-ids", "1,2,3,4,5,6,7,8,9,10,11,12,13"},
       "--prompt-ids: 13 tokens exceed the compiled prefill limit of 12 "
       "tokens (rebuild with ds-compile --max-seq-len=29)"},
      {{"--max-new-tokens", "25"},
       "--max-new-tokens: 8 prompt tokens + 25 new tokens exceed the "
       "compiled maximum sequence length of 32 (rebuild with ds-compile "
       "--max-seq-len=33)"},
  };
  for (const Case &c : cases) {
    Result r = run(c.args);
    EXPECT_EQ(r.code, 2) << c.message;
    EXPECT_EQ(r.err.rfind("error: " + c.message, 0), 0u)
        << "got: " << r.err << "want: error: " << c.message;
    EXPECT_EQ(r.err.back(), '\n');
    EXPECT_EQ(r.out, "");
  }
}

TEST(Main, LoadErrors) {
  TempDir dir;
  Result r = run({"--weights", dir.file("missing.safetensors")});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: " + dir.file("missing.safetensors") +
                       ": No such file or directory\n");
  EXPECT_EQ(r.out, "");

  writeSafetensors(dir.file("m.safetensors"),
                   {{"w", "F32", {4}, std::string(16, '\0')}});
  r = run({"--weights=" + dir.file("m.safetensors")});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: " + dir.file("m.safetensors") +
                       ": tensor 'w' has shape [4]; the model expects [2, 2]\n");

  writeSafetensors(dir.file("m.safetensors"),
                   {{"w", "BF16", {2, 2}, std::string(8, '\0')}});
  r = run({"--weights", dir.file("m.safetensors"), "--max-new-tokens", "2"});
  EXPECT_EQ(r.code, 0) << r.err;
}

} // namespace
