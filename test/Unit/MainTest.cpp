//===- MainTest.cpp - the executable's command line (runMain) -------------===//
//
// runMain over a fake model whose programs make the next token a known
// function of (id, position, the sequence's history), so the generation
// loops are checked exactly. The history is read back from the Context's KV
// cache (layer 0 for the main model, the last layer for the MTP module), in
// the slot ctx.tokenSequence(i) says: a wrong slot, a position that was not
// written, or a stale row shows up as different tokens or as a counted error.
//
//===----------------------------------------------------------------------===//

#include "ds/Runtime/Runtime.h"

#include "RuntimeTestUtil.h"


#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <regex>
#include <sstream>

using namespace dsrt;
using namespace dsrt_test;

namespace {

constexpr int64_t kVocab = 16;
constexpr int64_t kHidden = 3;
constexpr int64_t kMaxSeqLen = 160;

/// The fake model's next token after `id` at `pos`, where `sum` is the sum
/// of the sequence's token ids at positions [0, pos] (including `id`).
int32_t nextToken(int32_t id, int32_t pos, int64_t sum) {
  return int32_t((id * 3 + pos + 5 * sum) % kVocab);
}

// What the fake programs saw.
std::vector<int32_t> decodePositions; // every decode token's position
std::vector<int64_t> decodeSizes;     // tokens of every decode call
std::vector<int64_t> mtpSizes;        // tokens of every MTP call
int64_t historyErrors = 0;            // reads of unwritten cache rows, ...
/// The fake MTP drafts wrong when (pos + sum) % mtpWrongEvery == 0 (never
/// when 0).
int64_t mtpWrongEvery = 3;

/// Row with 1 at `t` and, as a tie, at the index after it (the lower index
/// must win); 0 elsewhere.
void oneHot(int32_t t, float *row) {
  for (int64_t v = 0; v < kVocab; ++v)
    row[v] = 0.0f;
  row[t] = 1.0f;
  if (t + 1 < kVocab)
    row[t + 1] = 1.0f;
}

/// Sum of column 0 of cache rows [0, pos] of (layer, seq); counts a row not
/// written (its column 1 is the marker 1) as an error.
int64_t historySum(Context &ctx, int64_t layer, int32_t seq, int32_t pos) {
  int64_t sum = 0;
  for (int32_t q = 0; q <= pos; ++q) {
    const float *row = ctx.cacheRow(layer, seq, q);
    if (row[1] != 1.0f)
      ++historyErrors;
    sum += int64_t(row[0]);
  }
  return sum;
}

/// The main model: writes every token to cache layer 0 first (so a token
/// sees the earlier ones of the same call), then reads its history.
/// Hidden state of token i: [sum, the sequence's first token, position].
void fakeMain(Context &ctx, const int32_t *ids, const int32_t *pos, int64_t n,
              float *logits, float *hidden) {
  for (int64_t i = 0; i < n; ++i) {
    float *row = ctx.cacheRow(0, ctx.tokenSequence(i), pos[i]);
    row[0] = float(ids[i]);
    row[1] = 1.0f;
  }
  for (int64_t i = 0; i < n; ++i) {
    int32_t seq = ctx.tokenSequence(i);
    int64_t sum = historySum(ctx, 0, seq, pos[i]);
    oneHot(nextToken(ids[i], pos[i], sum), logits + i * kVocab);
    hidden[i * kHidden + 0] = float(sum);
    hidden[i * kHidden + 1] = ctx.cacheRow(0, seq, 0)[0];
    hidden[i * kHidden + 2] = float(pos[i]);
  }
}

void fakePrefill(Context &ctx, const int32_t *ids, const int32_t *pos,
                 int64_t n, float *logits, float *hidden) {
  EXPECT_LE(n, 12);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(pos[i], i);
    EXPECT_EQ(ctx.tokenSequence(i), ctx.tokenSequence(0));
  }
  fakeMain(ctx, ids, pos, n, logits, hidden);
}

void fakeDecode(Context &ctx, const int32_t *ids, const int32_t *pos,
                int64_t n, float *logits, float *hidden) {
  EXPECT_GE(n, 1);
  EXPECT_LE(n, 4);
  EXPECT_NE(ctx.weight(0), nullptr);
  decodeSizes.push_back(n);
  for (int64_t i = 0; i < n; ++i)
    decodePositions.push_back(pos[i]);
  fakeMain(ctx, ids, pos, n, logits, hidden);
}

/// The MTP module: token i is the main model's hidden state at pos[i] and
/// the token at pos[i] + 1; it keeps that token in the last cache layer at
/// pos[i] and checks that layer's history against the hidden state (rows
/// [0, p] hold tokens 1..p+1). Drafts the true next token, except when
/// mtpWrongEvery says to be wrong.
void fakeMtp(Context &ctx, const float *hiddenIn, const int32_t *ids,
             const int32_t *pos, int64_t n, float *logits, float *hiddenOut) {
  EXPECT_LE(n, 12);
  mtpSizes.push_back(n);
  const int64_t layer = ctx.spec().cacheLayers - 1;
  for (int64_t i = 0; i < n; ++i) {
    float *row = ctx.cacheRow(layer, ctx.tokenSequence(i), pos[i]);
    row[0] = float(ids[i]);
    row[1] = 1.0f;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float *h = hiddenIn + i * kHidden;
    int64_t sum = int64_t(h[0]), first = int64_t(h[1]);
    if (int32_t(h[2]) != pos[i])
      ++historyErrors;
    int64_t mtpSum = historySum(ctx, layer, ctx.tokenSequence(i), pos[i]);
    if (mtpSum + first != sum + ids[i])
      ++historyErrors;
    int32_t draft = nextToken(ids[i], pos[i] + 1, sum + ids[i]);
    if (mtpWrongEvery && (pos[i] + sum) % mtpWrongEvery == 0)
      draft = int32_t((draft + 1) % kVocab);
    oneHot(draft, logits + i * kVocab);
    for (int64_t d = 0; d < kHidden; ++d)
      hiddenOut[i * kHidden + d] = 0.0f;
  }
}

const WeightSpec kWeights[] = {{"w", 2, {2, 2}, DType::F32}};

ModelSpec fakeSpec() {
  ModelSpec s{};
  s.name = "fake-model";
  s.vocabSize = kVocab;
  s.hiddenSize = kHidden;
  s.weights = kWeights;
  s.numWeights = 1;
  s.cacheLayers = 2; // the main layer, then the MTP layer
  s.kvLoraRank = 1;
  s.qkRopeDim = 1;
  s.maxSeqLen = kMaxSeqLen; // 3 cache blocks per sequence
  s.arenaBytes = 64;
  s.prefill = fakePrefill;
  s.prefillMaxTokens = 12;
  s.decode = fakeDecode;
  s.decodeMaxTokens = 4;
  s.mtp = fakeMtp;
  s.mtpMaxTokens = 12;
  return s;
}

struct Result {
  int code;
  std::string out, err;
};

Result runWith(const ModelSpec &spec, std::vector<std::string> args) {
  args.insert(args.begin(), "model");
  std::vector<char *> argv;
  for (std::string &a : args)
    argv.push_back(&a[0]);
  argv.push_back(nullptr);
  decodePositions.clear();
  decodeSizes.clear();
  mtpSizes.clear();
  historyErrors = 0;
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  Result r;
  r.code = runMain(int(args.size()), argv.data(), spec);
  r.out = ::testing::internal::GetCapturedStdout();
  r.err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(historyErrors, 0);
  return r;
}

Result run(std::vector<std::string> args) {
  static const ModelSpec spec = fakeSpec();
  return runWith(spec, std::move(args));
}

/// Plain greedy decoding of the fake model, computed directly.
std::vector<int32_t> greedy(const std::vector<int32_t> &prompt,
                            int64_t count) {
  std::vector<int32_t> t(prompt);
  int64_t sum = 0;
  for (int32_t id : prompt)
    sum += id;
  for (int64_t i = 0; i < count; ++i) {
    int32_t next = nextToken(t.back(), int32_t(t.size()) - 1, sum);
    t.push_back(next);
    sum += next;
  }
  return std::vector<int32_t>(t.begin() + int64_t(prompt.size()), t.end());
}

std::string tokensLine(const std::vector<int32_t> &tokens) {
  std::string line = "tokens:";
  for (int32_t t : tokens)
    line += " " + std::to_string(t);
  return line + "\n";
}

std::string expectedTokens(std::vector<int32_t> prompt, int64_t count) {
  return tokensLine(greedy(prompt, count));
}

std::string firstLine(const std::string &s) {
  return s.substr(0, s.find('\n') + 1);
}

std::string joinIds(const std::vector<int32_t> &ids, const char *sep) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i)
    s += (i ? sep : "") + std::to_string(ids[i]);
  return s;
}

/// Sets an environment variable for the scope.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name_(name) {
    setenv(name, value, 1);
  }
  ~ScopedEnv() { unsetenv(name_); }

private:
  const char *name_;
};

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
  EXPECT_EQ(decodeSizes, std::vector<int64_t>(15, 1));
  EXPECT_TRUE(mtpSizes.empty());
}

TEST(Main, FlagsBothForms) {
  Result r = run({"--prompt-ids=3,4", "--max-new-tokens", "3", "--seed=5",
                  "--threads", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(firstLine(r.out), expectedTokens({3, 4}, 3));
  r = run({"--max-new-tokens=1"});
  EXPECT_EQ(firstLine(r.out), expectedTokens({1, 2, 3, 4, 5, 6, 7, 8}, 1));
  EXPECT_TRUE(decodePositions.empty());
}

TEST(Main, ZeroNewTokens) {
  Result r = run({"--max-new-tokens", "0"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(firstLine(r.out), "tokens:\n");
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
  oneHot(nextToken(1, 0, 1), want.data());
  oneHot(nextToken(5, 1, 6), want.data() + kVocab);
  oneHot(nextToken(9, 2, 15), want.data() + 2 * kVocab);
  EXPECT_EQ(std::memcmp(bytes.data() + 128, want.data(), want.size() * 4), 0);

  r = run({"--dump-logits", dir.file("none/l.npy")});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("error: " + dir.file("none/l.npy") + ": ", 0), 0u)
      << r.err;
}

/// The generated ids of a `tokens:` line.
std::vector<int32_t> generated(const std::string &out) {
  std::istringstream in(firstLine(out).substr(std::strlen("tokens:")));
  std::vector<int32_t> ids;
  for (int32_t id; in >> id;)
    ids.push_back(id);
  return ids;
}

TEST(Main, DumpDecodeLogits) {
  TempDir dir;
  // Row s is the decode at position n + s: the one-hot of token s + 1.
  const std::string plain = dir.file("plain.npy");
  Result r = run({"--prompt-ids", "1,5,9", "--max-new-tokens", "9",
                  "--dump-decode-logits", plain, "--dump-logits",
                  dir.file("prefill.npy")});
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<int32_t> tokens = generated(r.out);
  ASSERT_EQ(tokens.size(), 9u) << r.out;
  std::string bytes = readBytes(plain);
  ASSERT_EQ(bytes.size(), 128u + 8 * kVocab * 4);
  EXPECT_NE(bytes.find("'shape': (8, 16)"), std::string::npos);
  std::vector<float> want(8 * kVocab);
  for (int64_t s = 0; s < 8; ++s)
    oneHot(tokens[size_t(s + 1)], want.data() + s * kVocab);
  EXPECT_EQ(std::memcmp(bytes.data() + 128, want.data(), want.size() * 4), 0);

  // Speculation files the verifying calls' rows, accepted drafts' second
  // rows included: the same file. The fake MTP drafts wrong now and then;
  // 7 and 10 new tokens end on an accepted draft's extra token (one row
  // past the file, dropped), 9 on a rejected one.
  mtpWrongEvery = 2;
  for (const char *maxNew : {"7", "9", "10"}) {
    const std::string greedy = dir.file(std::string("g") + maxNew + ".npy");
    const std::string spec = dir.file(std::string("s") + maxNew + ".npy");
    r = run({"--prompt-ids", "1,5,9", "--max-new-tokens", maxNew,
             "--dump-decode-logits", greedy});
    ASSERT_EQ(r.code, 0) << r.err;
    tokens = generated(r.out);
    r = run({"--prompt-ids", "1,5,9", "--max-new-tokens", maxNew,
             "--speculative=mtp", "--dump-decode-logits", spec});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("mtp.acceptance: "), std::string::npos);
    EXPECT_EQ(r.out.find("mtp.acceptance: 1.000"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("mtp.acceptance: 0.000"), std::string::npos) << r.out;
    EXPECT_EQ(generated(r.out), tokens) << maxNew;
    EXPECT_EQ(readBytes(spec), readBytes(greedy)) << maxNew;
  }
  mtpWrongEvery = 3;

  // One new token has no decode: an empty [0, vocab] array.
  r = run({"--max-new-tokens", "1", "--dump-decode-logits", plain});
  ASSERT_EQ(r.code, 0) << r.err;
  bytes = readBytes(plain);
  EXPECT_EQ(bytes.size(), 128u);
  EXPECT_NE(bytes.find("'shape': (0, 16)"), std::string::npos);

  r = run({"--max-new-tokens", "2", "--dump-decode-logits",
           dir.file("none/d.npy")});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("error: " + dir.file("none/d.npy") + ": ", 0), 0u)
      << r.err;
}

TEST(Main, Help) {
  Result r = run({"--max-new-tokens", "2", "--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("usage: model [options]"), std::string::npos);
  EXPECT_NE(r.out.find("'fake-model': vocab size 16, at\nmost 160 positions"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("prompts of at most 12"), std::string::npos);
  EXPECT_NE(r.out.find("decode calls of at most 4 tokens; an MTP module"),
            std::string::npos);
  for (const char *flag :
       {"--speculative=mtp", "--dump-mtp-logits FILE.npy",
        "--dump-decode-logits FILE.npy", "[max-new-tokens - 1, 16]",
        "--requests FILE.jsonl", "--output FILE", "--max-batch N",
        "(default 1, at most 4)", "DS_KV_BLOCKS"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
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
      {{"--max-new-tokens", "153"},
       "--max-new-tokens: 8 prompt tokens + 153 new tokens exceed the "
       "compiled maximum sequence length of 160 (rebuild with ds-compile "
       "--max-seq-len=161)"},
      {{"--speculative"}, "--speculative: missing value"},
      {{"--speculative=draft"}, "--speculative: expected 'mtp', got 'draft'"},
      {{"--requests="}, "--requests: missing value"},
      {{"--output", "x.jsonl"}, "--output needs --requests"},
      {{"--max-batch", "2"}, "--max-batch needs --requests"},
      {{"--requests", "r.jsonl", "--max-batch", "0"},
       "--max-batch: expected a positive integer, got '0'"},
      {{"--requests", "r.jsonl", "--max-batch=x"},
       "--max-batch: expected a positive integer, got 'x'"},
      {{"--requests", "r.jsonl", "--max-batch", "5"},
       "--max-batch: 5 exceeds the compiled decode batch of 4 (rebuild with "
       "ds-compile --max-batch=5)"},
      {{"--requests", "r.jsonl", "--prompt-ids", "1"},
       "--prompt-ids cannot be used with --requests (each request has its "
       "own prompt_ids)"},
      {{"--max-new-tokens", "3", "--requests", "r.jsonl"},
       "--max-new-tokens cannot be used with --requests (each request has "
       "its own max_new_tokens)"},
      {{"--requests", "r.jsonl", "--dump-logits", "l.npy"},
       "--dump-logits cannot be used with --requests"},
      {{"--requests", "r.jsonl", "--speculative=mtp"},
       "--speculative=mtp cannot be used with --requests"},
      {{"--dump-mtp-logits="}, "--dump-mtp-logits: missing value"},
      {{"--dump-mtp-logits", "m.npy"},
       "--dump-mtp-logits needs --speculative=mtp"},
      {{"--dump-mtp-logits", "m.npy", "--dump-logits", "l.npy"},
       "--dump-mtp-logits needs --speculative=mtp"},
      {{"--speculative=mtp", "--dump-mtp-logits", "m.npy", "--max-new-tokens",
        "0"},
       "--dump-mtp-logits needs --max-new-tokens 1 or more (the MTP warm-up "
       "reads the first generated token)"},
      {{"--requests", "r.jsonl", "--dump-mtp-logits", "m.npy"},
       "--dump-mtp-logits cannot be used with --requests"},
      {{"--dump-decode-logits="}, "--dump-decode-logits: missing value"},
      {{"--requests", "r.jsonl", "--dump-decode-logits", "d.npy"},
       "--dump-decode-logits cannot be used with --requests"},
      {{"--dump-logits", "l.npy", "--dump-decode-logits=l.npy"},
       "--dump-logits and --dump-decode-logits name the same file 'l.npy'"},
      {{"--speculative=mtp", "--dump-decode-logits", "m.npy",
        "--dump-mtp-logits", "m.npy"},
       "--dump-decode-logits and --dump-mtp-logits name the same file "
       "'m.npy'"},
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

TEST(Main, SingleCacheTooSmall) {
  ScopedEnv blocks("DS_KV_BLOCKS", "1");
  Result r = run({"--max-new-tokens", "60"}); // 68 positions: 2 blocks
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("error: the KV cache cannot hold 68 positions: ", 0),
            0u)
      << r.err;
  EXPECT_EQ(r.out, "");
  r = run({"--max-new-tokens", "56"}); // 64 positions: 1 block
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(firstLine(r.out), expectedTokens({1, 2, 3, 4, 5, 6, 7, 8}, 56));
}

//===----------------------------------------------------------------------===//
// Speculative decoding
//===----------------------------------------------------------------------===//

/// Drafts and accepted drafts of the MTP algorithm on the fake model,
/// computed from the greedy tokens: the draft of the token at m + 1 comes
/// from the MTP row at m - 1 and is wrong when mtpWrongEvery says so.
std::pair<int64_t, int64_t> expectedAcceptance(const std::vector<int32_t> &p,
                                               int64_t count) {
  std::vector<int32_t> all(p);
  std::vector<int32_t> gen = greedy(p, count);
  all.insert(all.end(), gen.begin(), gen.end());
  std::vector<int64_t> sum(all.size());
  for (size_t i = 0; i < all.size(); ++i)
    sum[i] = all[i] + (i ? sum[i - 1] : 0);
  const int64_t n = int64_t(p.size());
  int64_t drafts = 0, accepted = 0;
  if (count < 2)
    return {0, 0};
  for (int64_t m = n; m - n + 1 < count;) {
    ++drafts;
    bool wrong = mtpWrongEvery && (m - 1 + sum[size_t(m - 1)]) % mtpWrongEvery == 0;
    if (!wrong) {
      ++accepted;
      m += 2;
    } else {
      m += 1;
    }
  }
  return {accepted, drafts};
}

const std::regex kAcceptance(
    "mtp\\.acceptance: ([0-9]+\\.[0-9]{3}) \\(([0-9]+)/([0-9]+)\\), "
    "[0-9]+\\.[0-9] tok/s\n");

TEST(Main, SpeculativeEqualsGreedy) {
  const std::vector<std::vector<int32_t>> prompts = {
      {1}, {3, 4}, {1, 2, 3, 4, 5, 6, 7, 8}, {15, 0, 7, 7, 2, 9, 11, 4, 1, 0,
                                             13, 6}};
  int64_t totalAccepted = 0, totalRejected = 0;
  for (int64_t wrongEvery : {0, 1, 2, 3}) {
    mtpWrongEvery = wrongEvery;
    for (const auto &p : prompts)
      for (int64_t count : {0, 1, 2, 3, 4, 5, 16, 37}) {
        std::string ids = joinIds(p, ",");
        SCOPED_TRACE("prompt " + ids + ", " + std::to_string(count) +
                     " tokens, wrong every " + std::to_string(wrongEvery));
        Result r = run({"--prompt-ids", ids, "--max-new-tokens",
                        std::to_string(count), "--speculative=mtp"});
        ASSERT_EQ(r.code, 0) << r.err;
        EXPECT_EQ(r.err, "");
        std::istringstream lines(r.out);
        std::string tokens, timing, acceptance;
        std::getline(lines, tokens);
        std::getline(lines, timing);
        std::getline(lines, acceptance);
        EXPECT_EQ(tokens + "\n", expectedTokens(p, count));
        EXPECT_TRUE(std::regex_match(timing + "\n", kTiming)) << timing;
        EXPECT_NE(timing.find("decode " +
                              std::to_string(count ? count - 1 : 0) +
                              " tokens"),
                  std::string::npos)
            << timing;
        std::smatch m;
        std::string a = acceptance + "\n";
        ASSERT_TRUE(std::regex_match(a, m, kAcceptance)) << acceptance;
        auto want = expectedAcceptance(p, count);
        EXPECT_EQ(std::stoll(m[2]), want.first);
        EXPECT_EQ(std::stoll(m[3]), want.second);
        char rate[32];
        std::snprintf(rate, sizeof rate, "%.3f",
                      want.second ? double(want.first) / double(want.second)
                                  : 0.0);
        EXPECT_EQ(m[1].str(), rate);
        EXPECT_EQ(lines.peek(), EOF);
        // Every decode call verifies [token, draft]; one MTP warm-up over the
        // prompt, then one update (1 or 2 tokens) per step but the last.
        EXPECT_EQ(decodeSizes, std::vector<int64_t>(size_t(want.second), 2));
        if (count >= 2) {
          ASSERT_FALSE(mtpSizes.empty());
          EXPECT_EQ(mtpSizes[0], int64_t(p.size()));
          EXPECT_EQ(int64_t(mtpSizes.size()), want.second);
        } else {
          EXPECT_TRUE(mtpSizes.empty());
        }
        if (wrongEvery == 0) {
          EXPECT_EQ(want.first, want.second);
        }
        if (wrongEvery == 1) {
          EXPECT_EQ(want.first, 0);
        }
        totalAccepted += want.first;
        totalRejected += want.second - want.first;
      }
  }
  mtpWrongEvery = 3;
  EXPECT_GT(totalAccepted, 0);
  EXPECT_GT(totalRejected, 0);
}

TEST(Main, SpeculativeAcceptanceCounts) {
  // An always-right MTP: every step adds 2 tokens; 9 new tokens = the
  // prefill's one + 4 steps.
  mtpWrongEvery = 0;
  Result r = run({"--max-new-tokens", "9", "--speculative", "mtp"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("\nmtp.acceptance: 1.000 (4/4), "), std::string::npos)
      << r.out;
  // 10 new tokens: the 5th step's second token is one too many.
  r = run({"--max-new-tokens", "10", "--speculative=mtp"});
  EXPECT_EQ(firstLine(r.out), expectedTokens({1, 2, 3, 4, 5, 6, 7, 8}, 10));
  EXPECT_NE(r.out.find("\nmtp.acceptance: 1.000 (5/5), "), std::string::npos)
      << r.out;
  // An always-wrong MTP: one token per step.
  mtpWrongEvery = 1;
  r = run({"--max-new-tokens", "9", "--speculative=mtp"});
  EXPECT_NE(r.out.find("\nmtp.acceptance: 0.000 (0/8), "), std::string::npos)
      << r.out;
  EXPECT_EQ(firstLine(r.out), expectedTokens({1, 2, 3, 4, 5, 6, 7, 8}, 9));
  mtpWrongEvery = 3;
  r = run({"--max-new-tokens", "1", "--speculative=mtp"});
  EXPECT_NE(r.out.find("\nmtp.acceptance: 0.000 (0/0), 0.0 tok/s\n"),
            std::string::npos)
      << r.out;
}

TEST(Main, SpeculativeNeedsMtp) {
  ModelSpec noMtp = fakeSpec();
  noMtp.mtp = nullptr;
  Result r = runWith(noMtp, {"--speculative=mtp"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "error: --speculative=mtp: this model has no MTP module\n");
  ModelSpec narrow = fakeSpec();
  narrow.decodeMaxTokens = 1;
  r = runWith(narrow, {"--speculative", "mtp"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err.rfind("error: --speculative=mtp needs a model compiled for "
                        "at least 2 decode tokens",
                        0),
            0u)
      << r.err;
  EXPECT_EQ(r.out, "");
}

/// The fake MTP's warm-up logits [n, kVocab]: row i from the main model's
/// hidden state at i (the prefix sum through i) and token i + 1, where token
/// n is the first generated one.
std::vector<float> expectedMtpWarmup(const std::vector<int32_t> &p) {
  std::vector<int32_t> t(p);
  t.push_back(greedy(p, 1)[0]);
  std::vector<float> rows(p.size() * size_t(kVocab));
  int64_t sum = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    sum += t[i];
    const int32_t id = t[i + 1];
    int32_t draft = nextToken(id, int32_t(i) + 1, sum + id);
    if (mtpWrongEvery && (int64_t(i) + sum) % mtpWrongEvery == 0)
      draft = int32_t((draft + 1) % kVocab);
    oneHot(draft, rows.data() + i * kVocab);
  }
  return rows;
}

/// Checks an .npy written by --dump-mtp-logits: float32 [rows, kVocab]
/// equal to `want`.
void checkNpy(const std::string &path, const std::vector<float> &want) {
  const size_t rows = want.size() / size_t(kVocab);
  std::string bytes = readBytes(path);
  ASSERT_EQ(bytes.size(), 128u + want.size() * 4);
  EXPECT_NE(bytes.find("'descr': '<f4'"), std::string::npos);
  EXPECT_NE(bytes.find("'shape': (" + std::to_string(rows) + ", 16)"),
            std::string::npos)
      << bytes.substr(0, 128);
  EXPECT_EQ(std::memcmp(bytes.data() + 128, want.data(), want.size() * 4), 0);
}

TEST(Main, DumpMtpLogits) {
  TempDir dir;
  const std::string path = dir.file("mtp.npy");
  mtpWrongEvery = 3; // some rows draft wrong: they are dumped as computed
  const std::vector<int32_t> p = {1, 5, 9, 2, 7};
  for (int64_t count : {1, 2, 6}) {
    SCOPED_TRACE(std::to_string(count) + " new tokens");
    std::remove(path.c_str());
    Result r = run({"--prompt-ids", joinIds(p, ","), "--max-new-tokens",
                    std::to_string(count), "--speculative=mtp",
                    "--dump-mtp-logits", path});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    // The dump changes nothing else: the tokens, and for one new token the
    // acceptance line, are those of a run without it.
    EXPECT_EQ(firstLine(r.out), expectedTokens(p, count));
    auto want = expectedAcceptance(p, count);
    EXPECT_NE(r.out.find("\nmtp.acceptance: "), std::string::npos);
    EXPECT_NE(r.out.find(" (" + std::to_string(want.first) + "/" +
                         std::to_string(want.second) + "), "),
              std::string::npos)
        << r.out;
    ASSERT_FALSE(mtpSizes.empty());
    EXPECT_EQ(mtpSizes[0], int64_t(p.size())); // the warm-up, one call
    checkNpy(path, expectedMtpWarmup(p));
  }

  // A module compiled for fewer tokens than the prompt warms up in several
  // calls; the dump has every call's rows, and the draft the last one's.
  ModelSpec narrow = fakeSpec();
  narrow.mtpMaxTokens = 5;
  const std::vector<int32_t> longer = {15, 0, 7, 7, 2, 9, 11, 4, 1, 0, 13, 6};
  for (int64_t wrongEvery : {0, 3}) {
    mtpWrongEvery = wrongEvery;
    Result r = runWith(narrow, {"--prompt-ids", joinIds(longer, ","),
                                "--max-new-tokens", "9", "--speculative=mtp",
                                "--dump-mtp-logits", path});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(firstLine(r.out), expectedTokens(longer, 9));
    ASSERT_GE(mtpSizes.size(), 3u);
    EXPECT_EQ(std::vector<int64_t>(mtpSizes.begin(), mtpSizes.begin() + 3),
              (std::vector<int64_t>{5, 5, 2}));
    auto want = expectedAcceptance(longer, 9);
    EXPECT_NE(r.out.find(" (" + std::to_string(want.first) + "/" +
                         std::to_string(want.second) + "), "),
              std::string::npos)
        << r.out;
    checkNpy(path, expectedMtpWarmup(longer));
  }
  mtpWrongEvery = 3;

  Result r = run({"--speculative=mtp", "--dump-mtp-logits",
                  dir.file("none/mtp.npy")});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("error: " + dir.file("none/mtp.npy") + ": ", 0), 0u)
      << r.err;
}

//===----------------------------------------------------------------------===//
// Batch mode
//===----------------------------------------------------------------------===//

struct BatchRequest {
  std::string id; // as JSON
  std::vector<int32_t> prompt;
  int64_t maxNew;
};

std::string requestLine(const BatchRequest &q) {
  return "{\"id\": " + q.id + ", \"prompt_ids\": [" + joinIds(q.prompt, ", ") +
         "], \"max_new_tokens\": " + std::to_string(q.maxNew) + "}\n";
}

/// Writes `reqs` as a --requests file, one line each.
void writeRequests(const std::string &path,
                   const std::vector<BatchRequest> &reqs) {
  std::string text;
  for (const BatchRequest &q : reqs)
    text += requestLine(q);
  writeBytes(path, text);
}

const std::regex kResult("\\{\"id\": (.*), \"tokens\": \\[([0-9, ]*)\\], "
                         "\"prompt_tokens\": ([0-9]+), \"ttft_ms\": "
                         "([0-9]+\\.[0-9]{2}), \"total_ms\": "
                         "([0-9]+\\.[0-9]{2})\\}");
const std::regex kSummary("batch: ([0-9]+) requests, ([0-9]+) tokens in "
                          "[0-9]+\\.[0-9]{2} s \\([0-9]+\\.[0-9] tok/s\\), "
                          "max batch ([0-9]+), [0-9]+ decode steps \\(mean "
                          "batch [0-9]+\\.[0-9], [0-9]+\\.[0-9]{3} ms each\\)\n");

/// Checks the result lines (any order) against greedy runs of `want`, one
/// line per request; returns the ids in output order.
std::vector<std::string> checkResults(const std::string &out,
                                      const std::vector<BatchRequest> &want) {
  std::map<std::string, const BatchRequest *> byId;
  for (const BatchRequest &q : want)
    byId[q.id] = &q;
  std::vector<std::string> order;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    std::smatch m;
    if (!std::regex_match(line, m, kResult)) {
      ADD_FAILURE() << "bad result line: " << line;
      continue;
    }
    auto it = byId.find(m[1]);
    if (it == byId.end()) {
      ADD_FAILURE() << "unexpected id in: " << line;
      continue;
    }
    const BatchRequest &q = *it->second;
    EXPECT_EQ(m[2].str(), joinIds(greedy(q.prompt, q.maxNew), ", "))
        << "request " << q.id;
    EXPECT_EQ(std::stoll(m[3]), int64_t(q.prompt.size()));
    EXPECT_LE(std::stod(m[4]), std::stod(m[5]));
    order.push_back(q.id);
  }
  std::vector<std::string> sorted(order), ids;
  for (const BatchRequest &q : want)
    ids.push_back(q.id);
  std::sort(sorted.begin(), sorted.end());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(sorted, ids) << "every request exactly once";
  return order;
}

/// Parses the summary line at the end of `err`: {requests, tokens, batch}.
std::vector<int64_t> summary(const std::string &err) {
  size_t at = err.rfind("batch: ");
  std::smatch m;
  std::string tail = at == std::string::npos ? "" : err.substr(at);
  if (!std::regex_match(tail, m, kSummary)) {
    ADD_FAILURE() << "no summary line in: " << err;
    return {-1, -1, -1};
  }
  return {std::stoll(m[1]), std::stoll(m[2]), std::stoll(m[3])};
}

std::vector<BatchRequest> mixedRequests() {
  return {
      {"\"a\"", {1, 2, 3}, 5},
      {"7", {9}, 12},
      {"\"long\"", {4, 4, 1, 0, 15, 3, 3, 8, 2, 6, 5, 1}, 20},
      {"\"zero\"", {5, 6}, 0},
      {"\"one\"", {2, 3, 5, 7}, 1},
      {"-3", {11, 12}, 2},
      {"\"b\"", {0, 0, 0, 0, 0}, 9},
  };
}

TEST(Main, BatchEqualsSingleRuns) {
  TempDir dir;
  std::vector<BatchRequest> reqs = mixedRequests();
  writeRequests(dir.file("r.jsonl"), reqs);
  int64_t wantTokens = 0;
  for (const BatchRequest &q : reqs)
    wantTokens += q.maxNew;

  // The single-prompt runs agree with the reference.
  for (const BatchRequest &q : reqs) {
    Result r = run({"--prompt-ids", joinIds(q.prompt, ","),
                    "--max-new-tokens", std::to_string(q.maxNew)});
    EXPECT_EQ(firstLine(r.out), tokensLine(greedy(q.prompt, q.maxNew)));
  }

  for (int64_t batch : {1, 2, 3, 4}) {
    SCOPED_TRACE("--max-batch " + std::to_string(batch));
    std::vector<std::string> args = {"--requests", dir.file("r.jsonl")};
    if (batch != 1)
      args.insert(args.end(), {"--max-batch", std::to_string(batch)});
    Result r = run(args);
    ASSERT_EQ(r.code, 0) << r.err;
    std::vector<std::string> order = checkResults(r.out, reqs);
    EXPECT_EQ(summary(r.err),
              (std::vector<int64_t>{int64_t(reqs.size()), wantTokens, batch}));
    EXPECT_EQ(r.err.find("error"), std::string::npos) << r.err;
    int64_t most = *std::max_element(decodeSizes.begin(), decodeSizes.end());
    EXPECT_EQ(most, batch);
    if (batch == 1) { // one at a time: file order
      EXPECT_EQ(order, (std::vector<std::string>{"\"a\"", "7", "\"long\"",
                                                 "\"zero\"", "\"one\"", "-3",
                                                 "\"b\""}));
    }
    if (batch == 4) { // "zero" and "one" finish at their prefill
      ASSERT_GE(order.size(), 2u);
      EXPECT_EQ(std::vector<std::string>(order.begin(), order.begin() + 2),
                (std::vector<std::string>{"\"zero\"", "\"one\""}));
    }
  }
}

TEST(Main, BatchBadLines) {
  TempDir dir;
  std::string text =
      "{\"id\": \"ok1\", \"prompt_ids\": [1, 2], \"max_new_tokens\": 4}\n"
      "{\"id\": 1, \"prompt_ids\": [1, 2]\n"
      "\n"
      "[1, 2]\n"
      "{\"id\": true, \"prompt_ids\": [1], \"max_new_tokens\": 1}\n"
      "{\"id\": 2, \"prompt_ids\": [1]}\n"
      "{\"id\": 3, \"prompt_ids\": [1, 16], \"max_new_tokens\": 1}\n"
      "{\"id\": 4, \"prompt_ids\": [], \"max_new_tokens\": 1}\n"
      "{\"id\": 5, \"prompt_ids\": [1,2,3,4,5,6,7,8,9,10,11,12,13], "
      "\"max_new_tokens\": 1}\n"
      "{\"id\": 6, \"prompt_ids\": [1, 2, 3], \"max_new_tokens\": 158}\n"
      "   \r\n"
      "{\"id\": \"a\\\"b\", \"prompt_ids\": [3], \"max_new_tokens\": 3, "
      "\"extra\": null}\n"
      "{\"id\": 7, \"prompt_ids\": [1], \"max_new_tokens\": -1}\n"
      "{\"id\": 8, \"prompt_ids\": \"1 2\", \"max_new_tokens\": 1}\n"
      "{\"id\": 9, \"prompt_ids\": [1], \"max_new_tokens\": 1.5}\n"
      "{\"id\": 10, \"prompt_ids\": [1], \"max_new_tokens\": 1, \"id\": 1}\n"
      "{\"id\": 11, \"prompt_ids\": [-1], \"max_new_tokens\": 1}\n"
      "{\"id\": 12, \"prompt_ids\": [2, 3], \"max_new_tokens\": 2}";
  const std::string f = dir.file("r.jsonl");
  writeBytes(f, text);
  Result r = run({"--requests", f, "--max-batch", "2"});
  EXPECT_EQ(r.code, 1);
  checkResults(r.out, {{"\"ok1\"", {1, 2}, 4},
                       {"\"a\\\"b\"", {3}, 3},
                       {"12", {2, 3}, 2}});
  std::string want =
      "error: " + f + ":2: malformed JSON: expected ',' or '}' at byte 30\n" +
      "error: " + f + ":4: not a JSON object\n" +
      "error: " + f + ":5: \"id\" must be a string or an integer\n" +
      "error: " + f + ":6: missing \"max_new_tokens\"\n" +
      "error: " + f + ":7: token id 16 is out of range for vocab size 16\n" +
      "error: " + f + ":8: \"prompt_ids\" is empty\n" +
      "error: " + f + ":9: 13 prompt tokens exceed the compiled prefill "
                      "limit of 12 tokens\n" +
      "error: " + f + ":10: 3 prompt tokens + 158 new tokens exceed the "
                      "compiled maximum sequence length of 160\n" +
      "error: " + f + ":13: \"max_new_tokens\" must be a non-negative "
                      "integer\n" +
      "error: " + f + ":14: \"prompt_ids\" must be an array of token ids\n" +
      "error: " + f + ":15: malformed JSON: only integers are supported at "
                      "byte 48\n" +
      "error: " + f + ":16: malformed JSON: duplicate key 'id' at byte 55\n" +
      "error: " + f + ":17: token id -1 is out of range for vocab size 16\n";
  EXPECT_EQ(r.err.substr(0, r.err.rfind("batch: ")), want);
  EXPECT_EQ(summary(r.err), (std::vector<int64_t>{3, 9, 2}));

  // Only bad lines: nothing runs, still a summary.
  writeBytes(f, "{}\n");
  r = run({"--requests", f});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err.rfind("error: " + f + ":1: missing \"id\"\nbatch: 0 "
                        "requests, 0 tokens in ",
                        0),
            0u)
      << r.err;

  // An empty file is no error.
  writeBytes(f, "");
  r = run({"--requests", f});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(summary(r.err), (std::vector<int64_t>{0, 0, 0}));

  r = run({"--requests", dir.file("missing.jsonl")});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: " + dir.file("missing.jsonl") +
                       ": cannot open: No such file or directory\n");
}

TEST(Main, BatchOutputFile) {
  TempDir dir;
  std::vector<BatchRequest> reqs = mixedRequests();
  writeRequests(dir.file("r.jsonl"), reqs);
  writeBytes(dir.file("out.jsonl"), "old contents\n");
  Result r = run({"--requests", dir.file("r.jsonl"), "--output",
                  dir.file("out.jsonl"), "--max-batch=3"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  checkResults(readBytes(dir.file("out.jsonl")), reqs);
  EXPECT_EQ(summary(r.err)[0], int64_t(reqs.size()));
  EXPECT_EQ(listDir(dir.path()),
            (std::vector<std::string>{"out.jsonl", "r.jsonl"}));

  r = run({"--requests", dir.file("r.jsonl"), "--output",
           dir.file("none/out.jsonl")});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("error: " + dir.file("none/out.jsonl") +
                            ": cannot create: ",
                        0),
            0u)
      << r.err;
  EXPECT_EQ(r.out, "");

  // A load error leaves no output file behind.
  r = run({"--requests", dir.file("r.jsonl"), "--output", dir.file("o2"),
           "--weights", dir.file("missing.safetensors")});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(listDir(dir.path()),
            (std::vector<std::string>{"out.jsonl", "r.jsonl"}));
}

TEST(Main, BatchBackPressure) {
  // 2 blocks of 64 positions: at most 2 requests of <= 64 positions live at
  // once, though --max-batch allows 4.
  ScopedEnv blocks("DS_KV_BLOCKS", "2");
  TempDir dir;
  std::vector<BatchRequest> reqs;
  for (int i = 0; i < 6; ++i)
    reqs.push_back({std::to_string(i),
                    {int32_t(i), int32_t(i + 1), int32_t(2 * i % 16)},
                    int64_t(5 + 7 * i)});
  writeRequests(dir.file("r.jsonl"), reqs);
  Result r = run({"--requests", dir.file("r.jsonl"), "--max-batch", "4"});
  ASSERT_EQ(r.code, 0) << r.err;
  checkResults(r.out, reqs);
  std::vector<int64_t> s = summary(r.err);
  EXPECT_EQ(s[0], 6);
  EXPECT_EQ(s[2], 2);
  EXPECT_EQ(*std::max_element(decodeSizes.begin(), decodeSizes.end()), 2);
}

TEST(Main, BatchNeverFits) {
  // One block: a request of more than 64 positions can never run; the
  // others still do.
  ScopedEnv blocks("DS_KV_BLOCKS", "1");
  TempDir dir;
  std::vector<BatchRequest> ok = {{"\"x\"", {1, 2}, 10}, {"\"y\"", {3}, 62}};
  std::string text = requestLine(ok[0]) +
                     requestLine({"\"big\"", {1, 2, 3, 4}, 61}) +
                     requestLine(ok[1]);
  writeBytes(dir.file("r.jsonl"), text);
  Result r = run({"--requests", dir.file("r.jsonl"), "--max-batch", "2"});
  EXPECT_EQ(r.code, 1);
  checkResults(r.out, ok);
  EXPECT_EQ(r.err.substr(0, r.err.rfind("batch: ")),
            "error: " + dir.file("r.jsonl") +
                ":2: needs 65 cache positions (2 blocks of 64), more than "
                "the whole KV cache of 1 blocks (DS_KV_BLOCKS)\n");
  EXPECT_EQ(summary(r.err), (std::vector<int64_t>{2, 72, 1}));
}

//===----------------------------------------------------------------------===//
// A backend that takes the argmax itself (Context::Outputs)
//===----------------------------------------------------------------------===//

/// Does what the CUDA backend does with Context::Outputs: answers the
/// argmax itself and delivers logits and hidden states only when asked.
/// What it need not deliver it fills with wrong values (logits whose argmax
/// is the next token id, hidden states the MTP's history check rejects),
/// so runMain must ask for whatever it reads.
void deliverOutputs(Context &ctx, int64_t n, const std::vector<float> &l,
                    const std::vector<float> &h, float *logits, float *hidden) {
  const Context::Outputs &o = ctx.outputs();
  if (o.argmax) {
    for (int64_t i = o.argmaxFrom; i < n; ++i)
      o.argmax[i] = int32_t(std::max_element(l.begin() + i * kVocab,
                                             l.begin() + (i + 1) * kVocab) -
                            (l.begin() + i * kVocab));
    ctx.setArgmaxDone();
  }
  for (int64_t i = 0; i < n * kVocab; ++i)
    logits[i] = o.logits || !o.argmax ? l[size_t(i)] : 0.0f;
  if (!o.logits && o.argmax)
    for (int64_t i = 0; i < n; ++i)
      oneHot(int32_t((o.argmax[i] + 1) % kVocab), logits + i * kVocab);
  for (int64_t i = 0; i < n * kHidden; ++i)
    hidden[i] = o.hidden ? h[size_t(i)] : -7.0f;
}

template <ProgramFn F>
void selfArgmax(Context &ctx, const int32_t *ids, const int32_t *pos,
                int64_t n, float *logits, float *hidden) {
  std::vector<float> l(size_t(n * kVocab)), h(size_t(n * kHidden));
  F(ctx, ids, pos, n, l.data(), h.data());
  deliverOutputs(ctx, n, l, h, logits, hidden);
}

void selfArgmaxMtp(Context &ctx, const float *hiddenIn, const int32_t *ids,
                   const int32_t *pos, int64_t n, float *logits,
                   float *hiddenOut) {
  std::vector<float> l(size_t(n * kVocab)), h(size_t(n * kHidden));
  fakeMtp(ctx, hiddenIn, ids, pos, n, l.data(), h.data());
  deliverOutputs(ctx, n, l, h, logits, hiddenOut);
}

TEST(Main, BackendArgmax) {
  ModelSpec spec = fakeSpec();
  spec.prefill = selfArgmax<fakePrefill>;
  spec.decode = selfArgmax<fakeDecode>;
  spec.mtp = selfArgmaxMtp;
  const std::vector<int32_t> p = {1, 5, 9, 2, 7};
  mtpWrongEvery = 3;
  Result r = runWith(spec, {"--prompt-ids", joinIds(p, ","),
                            "--max-new-tokens", "12"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(firstLine(r.out), expectedTokens(p, 12));
  // MTP reads the hidden states of prefill and decode.
  r = runWith(spec, {"--prompt-ids", joinIds(p, ","), "--max-new-tokens",
                     "12", "--speculative=mtp"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(firstLine(r.out), expectedTokens(p, 12));
  auto want = expectedAcceptance(p, 12);
  EXPECT_NE(r.out.find(" (" + std::to_string(want.first) + "/" +
                       std::to_string(want.second) + "), "),
            std::string::npos)
      << r.out;
  // Dumps ask for the logits.
  TempDir dir;
  r = runWith(spec, {"--prompt-ids", "1,5,9", "--dump-logits",
                     dir.file("l.npy"), "--max-new-tokens", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<float> logits(3 * kVocab);
  oneHot(nextToken(1, 0, 1), logits.data());
  oneHot(nextToken(5, 1, 6), logits.data() + kVocab);
  oneHot(nextToken(9, 2, 15), logits.data() + 2 * kVocab);
  checkNpy(dir.file("l.npy"), logits);
  r = runWith(spec, {"--prompt-ids", joinIds(p, ","), "--max-new-tokens", "6",
                     "--speculative=mtp", "--dump-mtp-logits",
                     dir.file("mtp.npy")});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(firstLine(r.out), expectedTokens(p, 6));
  checkNpy(dir.file("mtp.npy"), expectedMtpWarmup(p));
  // Batches.
  std::vector<BatchRequest> reqs = mixedRequests();
  writeRequests(dir.file("r.jsonl"), reqs);
  r = runWith(spec, {"--requests", dir.file("r.jsonl"), "--max-batch", "3"});
  ASSERT_EQ(r.code, 0) << r.err;
  checkResults(r.out, reqs);
}

} // namespace
