//===- Main.cpp - the compiled executable's command line ------------------===//
//
//   OUT [--weights PATH] [--prompt-ids 1,2,3] [--max-new-tokens N]
//       [--dump-logits FILE.npy] [--dump-decode-logits FILE.npy]
//       [--speculative=mtp] [--dump-mtp-logits FILE.npy] [--seed N]
//       [--threads N]
//   OUT --requests FILE.jsonl [--output FILE] [--max-batch N] [--weights PATH]
//       [--seed N] [--threads N]
//
// Single-prompt mode prints exactly two lines on stdout, `tokens: ...` and
// `timing: ...` (plus `mtp.acceptance: ...` with --speculative=mtp), so
// scripts can parse it. Batch mode (--requests) prints one JSON line per
// finished request on stdout (or --output) and a `batch:` summary on stderr.
// Everything else is an `error: ` line on stderr. Usage errors exit 2, load
// and run errors (and bad request lines) 1.
//
//===----------------------------------------------------------------------===//

#include "ds/Runtime/Comm.h"
#include "ds/Runtime/Npy.h"
#include "ds/Runtime/Runtime.h"

#include "Argmax.h"
#include "Json.h"
#include "Trace.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

using namespace dsrt;

namespace {

constexpr int kUsageError = 2;
constexpr int kRunError = 1;
constexpr uint64_t kMaxThreads = 4096;

using Clock = std::chrono::steady_clock;

struct Options {
  std::string weights; // empty: random weights from `seed`
  std::vector<int32_t> prompt{1, 2, 3, 4, 5, 6, 7, 8};
  int64_t maxNewTokens = 16;
  std::string dumpLogits; // empty: none
  std::string dumpDecodeLogits; // --dump-decode-logits; empty: none
  std::string dumpMtpLogits; // --dump-mtp-logits; empty: none
  uint64_t seed = 0;
  int threads = 1;
  bool speculative = false; // --speculative=mtp
  std::string requests;     // --requests: batch mode when set
  std::string output;       // --output: batch results file (else stdout)
  int64_t maxBatch = 1;
  bool writes = true;    // whether this rank writes files (rank 0 only)
  Comm *world = nullptr; // multi-rank: every rank runs the same loop
  // Which flags were given (single-prompt and batch flags do not mix).
  bool promptGiven = false, maxNewGiven = false, maxBatchGiven = false;
};

/// World rank: only rank 0 prints (stdout of the others goes to /dev/null,
/// and messages every rank would repeat are printed by rank 0 alone).
int gRank = 0;

template <class... Args> void note(const char *format, Args... args) {
  if (gRank == 0)
    std::fprintf(stderr, format, args...);
}

int fail(int code, const std::string &message) {
  note("error: %s\n", message.c_str());
  return code;
}

/// Whether every rank got here with ok == true (a collective: every rank
/// calls it at the same point). A rank that failed has printed its own
/// error, prefixed with its rank, because that error may be its alone.
bool agree(Comm *world, bool ok, const std::string &error) {
  if (!ok && gRank != 0 && !error.empty())
    std::fprintf(stderr, "error: rank %d: %s\n", gRank, error.c_str());
  if (!world || world->size() == 1)
    return ok;
  float failed = ok ? 0.0f : 1.0f;
  std::string commError;
  if (!world->allReduceSum(&failed, 1, &commError)) {
    std::fprintf(stderr, "error: rank %d: %s\n", gRank, commError.c_str());
    return false;
  }
  return failed == 0.0f;
}

/// Places the Context on the mesh and loads (or draws) its weights; false
/// after printing why (on every rank that knows).
bool prepare(Context &ctx, const Options &opts, Comm *world) {
  std::string error;
  bool ok = true;
  if (world && !ctx.setComm(world, &error)) {
    fail(kRunError, error); // the same on every rank
    return false;
  }
  if (!opts.weights.empty())
    ok = ctx.loadWeights(opts.weights.c_str(), &error);
  else
    ctx.randomWeights(opts.seed);
  if (ok && ctx.spec().prepare)
    ok = ctx.spec().prepare(ctx, &error);
  if (!ok && gRank == 0)
    fail(kRunError, error);
  if (!agree(world, ok, error)) {
    if (ok)
      note("error: another rank failed to load its weights (see above)\n");
    return false;
  }
  return true;
}

/// Decimal digits only (no sign, no spaces), at most `max`.
bool parseUnsigned(const std::string &s, uint64_t max, uint64_t *out) {
  if (s.empty())
    return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9')
      return false;
    uint64_t d = uint64_t(c - '0');
    if (v > (max - d) / 10)
      return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

/// Most tokens of one decode call (ModelSpec::decodeMaxTokens, at least 1).
int64_t decodeBatch(const ModelSpec &spec) {
  return std::max<int64_t>(spec.decodeMaxTokens, 1);
}

void printUsage(const char *prog, const ModelSpec &spec, int threads) {
  std::printf(
      "usage: %s [options]\n"
      "       %s --requests FILE.jsonl [--output FILE] [--max-batch N] "
      "[options]\n"
      "\n"
      "Greedy generation with the compiled model '%s': vocab size %lld, at\n"
      "most %lld positions (prompt + new tokens), prompts of at most %lld\n"
      "tokens; decode calls of at most %lld tokens; %s.\n"
      "\n"
      "options:\n"
      "  --weights PATH          a .safetensors file, or a directory with\n"
      "                          model.safetensors.index.json or "
      "*.safetensors\n"
      "                          (F32, BF16, F16, F8_E4M3 with 128x128 block\n"
      "                          scales); default: deterministic random\n"
      "                          weights from --seed\n"
      "  --prompt-ids 1,2,3      prompt token ids, comma-separated\n"
      "                          (default 1,2,3,4,5,6,7,8)\n"
      "  --max-new-tokens N      tokens to generate (default 16)\n"
      "  --dump-logits FILE.npy  write the prefill logits as float32\n"
      "                          [prompt tokens, %lld]\n"
      "  --dump-decode-logits FILE.npy\n"
      "                          write the logits that chose each generated\n"
      "                          token after the first as float32\n"
      "                          [max-new-tokens - 1, %lld] (0 rows below 2\n"
      "                          new tokens): row s is the decode at position\n"
      "                          prompt tokens + s (with --speculative=mtp:\n"
      "                          the verifying call's row). With the\n"
      "                          prefill's rows, these are a full forward\n"
      "                          pass's logits over the prompt and every\n"
      "                          generated token but the last. The decode\n"
      "                          timing then includes copying and writing\n"
      "                          them\n"
      "  --dump-mtp-logits FILE.npy\n"
      "                          with --speculative=mtp: write the logits of\n"
      "                          the MTP module's warm-up on the prompt as\n"
      "                          float32 [prompt tokens, %lld]; row i comes\n"
      "                          from the main model's hidden state at i and\n"
      "                          token i + 1 (the last: the first generated\n"
      "                          token) and drafts token i + 2. Needs\n"
      "                          --max-new-tokens 1 or more\n"
      "  --speculative=mtp       speculative decoding: the model's MTP module\n"
      "                          drafts the next token and each decode call\n"
      "                          verifies it with the current one (2 tokens),\n"
      "                          keeping it when greedy agrees; the tokens\n"
      "                          are those of plain greedy decoding. Needs an\n"
      "                          MTP module and a model compiled with\n"
      "                          --max-batch=2 or more; adds the line\n"
      "                          'mtp.acceptance: RATE (ACCEPTED/DRAFTS), "
      "X tok/s'\n"
      "  --requests FILE.jsonl   batch mode: one request per line, e.g.\n"
      "      {\"id\": \"a\", \"prompt_ids\": [1, 2], \"max_new_tokens\": 8}\n"
      "                          (id a string or an integer, echoed as given;\n"
      "                          blank lines skipped). A bad line is reported\n"
      "                          as 'error: FILE:LINE: ...' and skipped; the\n"
      "                          others run, and the exit status is then 1\n"
      "  --output FILE           with --requests: write the result lines to\n"
      "                          FILE (replaced when the run ends) instead of\n"
      "                          stdout\n"
      "  --max-batch N           with --requests: most sequences decoded\n"
      "                          together (default 1, at most %lld)\n"
      "  --seed N                seed of the random weights (default 0)\n"
      "  --threads N             worker threads (default %d, the hardware\n"
      "                          threads)\n"
      "  --help                  print this text\n"
      "\n"
      "Values may also be given as --flag=value. Prints 'tokens: ID ...' (the\n"
      "generated ids) and a 'timing:' line on stdout.\n"
      "\n"
      "Batch mode admits requests in file order while a slot is free and the\n"
      "KV cache can reserve the request's prompt + max_new_tokens positions\n"
      "(otherwise the queue waits for running requests to finish; a request\n"
      "that cannot fit even in an empty cache is an error). Each admitted\n"
      "request is prefilled alone, then every decode call advances all\n"
      "running requests by one token; the tokens are those of running each\n"
      "request alone. A finished request prints one line\n"
      "  {\"id\": ID, \"tokens\": [...], \"prompt_tokens\": N, "
      "\"ttft_ms\": X, \"total_ms\": Y}\n"
      "(times from the start of the batch; ttft is when its first token, or\n"
      "its prefill if it asks for none, was ready), in the order requests\n"
      "finish; stderr gets 'batch: R requests, T tokens in S s (X tok/s), max\n"
      "batch B, D decode steps (mean batch M, T ms each)' (B: the most\n"
      "requests live at once; D, M, T: the decode calls). DS_KV_BLOCKS=N sets\n"
      "the KV cache size in blocks of %lld positions (default: --max-batch\n"
      "sequences of the maximum length).\n"
      "\n"
      "DS_TRACE=FILE.json writes a Chrome trace (chrome://tracing, Perfetto)\n"
      "of every program call (prefill, decode step, MTP draft) at the end of\n"
      "a successful run; on the GPU with DS_CUDA_PROFILE=1 also of every\n"
      "kernel call.\n",
      prog, prog, spec.name, (long long)spec.vocabSize,
      (long long)spec.maxSeqLen, (long long)spec.prefillMaxTokens,
      (long long)decodeBatch(spec),
      spec.mtp ? "an MTP module" : "no MTP module", (long long)spec.vocabSize,
      (long long)spec.vocabSize, (long long)spec.vocabSize,
      (long long)decodeBatch(spec), threads, (long long)KVCache::kBlockTokens);
}

/// Parses argv into `opts`. Returns -1 to go on running, else the exit code
/// (0 after --help).
int parseArgs(int argc, char **argv, const ModelSpec &spec, Options *opts) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.compare(0, 2, "--") != 0)
      return fail(kUsageError, "unexpected argument '" + arg + "' (see --help)");
    std::string flag = arg, value;
    bool hasValue = false;
    size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      flag = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      hasValue = true;
    }

    if (flag == "--help") {
      if (hasValue)
        return fail(kUsageError, "--help takes no value");
      printUsage(argv[0], spec, opts->threads);
      return 0;
    }
    if (flag != "--weights" && flag != "--prompt-ids" &&
        flag != "--max-new-tokens" && flag != "--dump-logits" &&
        flag != "--dump-decode-logits" && flag != "--dump-mtp-logits" &&
        flag != "--seed" && flag != "--threads" && flag != "--speculative" &&
        flag != "--requests" && flag != "--output" && flag != "--max-batch")
      return fail(kUsageError, "unknown flag '" + flag + "' (see --help)");
    if (!hasValue) {
      // A following flag is not a value: `--weights --seed 1` is a mistake.
      if (i + 1 >= argc ||
          std::string(argv[i + 1]).compare(0, 2, "--") == 0)
        return fail(kUsageError, flag + ": missing value");
      value = argv[++i];
    }

    uint64_t n = 0;
    if (flag == "--weights" || flag == "--dump-logits" ||
        flag == "--dump-decode-logits" || flag == "--dump-mtp-logits" ||
        flag == "--requests" || flag == "--output") {
      if (value.empty())
        return fail(kUsageError, flag + ": missing value");
      (flag == "--weights"              ? opts->weights
       : flag == "--dump-logits"        ? opts->dumpLogits
       : flag == "--dump-decode-logits" ? opts->dumpDecodeLogits
       : flag == "--dump-mtp-logits"    ? opts->dumpMtpLogits
       : flag == "--requests"           ? opts->requests
                                        : opts->output) = value;
    } else if (flag == "--speculative") {
      if (value != "mtp")
        return fail(kUsageError,
                    "--speculative: expected 'mtp', got '" + value + "'");
      if (!spec.mtp)
        return fail(kUsageError,
                    "--speculative=mtp: this model has no MTP module");
      if (spec.decodeMaxTokens < 2)
        return fail(kUsageError,
                    "--speculative=mtp needs a model compiled for at least 2 "
                    "decode tokens (rebuild with ds-compile --max-batch=2)");
      opts->speculative = true;
    } else if (flag == "--max-batch") {
      const int64_t limit = decodeBatch(spec);
      if (!parseUnsigned(value, uint64_t(1) << 40, &n) || n == 0)
        return fail(kUsageError, "--max-batch: expected a positive integer, "
                                 "got '" + value + "'");
      if (int64_t(n) > limit)
        return fail(kUsageError,
                    "--max-batch: " + value +
                        " exceeds the compiled decode batch of " +
                        std::to_string(limit) +
                        " (rebuild with ds-compile --max-batch=" + value + ")");
      opts->maxBatch = int64_t(n);
      opts->maxBatchGiven = true;
    } else if (flag == "--seed") {
      if (!parseUnsigned(value, UINT64_MAX, &n))
        return fail(kUsageError, "--seed: expected a non-negative integer, "
                                 "got '" + value + "'");
      opts->seed = n;
    } else if (flag == "--threads") {
      if (!parseUnsigned(value, kMaxThreads, &n) || n == 0)
        return fail(kUsageError, "--threads: expected an integer from 1 to " +
                                     std::to_string(kMaxThreads) + ", got '" +
                                     value + "'");
      opts->threads = int(n);
    } else if (flag == "--max-new-tokens") {
      // Bounded so prompt + new tokens cannot overflow; the sequence-length
      // check below rejects anything this large anyway.
      if (!parseUnsigned(value, uint64_t(1) << 40, &n))
        return fail(kUsageError, "--max-new-tokens: expected a non-negative "
                                 "integer, got '" + value + "'");
      opts->maxNewTokens = int64_t(n);
      opts->maxNewGiven = true;
    } else { // --prompt-ids
      opts->prompt.clear();
      opts->promptGiven = true;
      if (value.empty())
        return fail(kUsageError, "--prompt-ids: the prompt is empty");
      size_t start = 0;
      for (;;) {
        size_t comma = value.find(',', start);
        std::string item = value.substr(
            start, comma == std::string::npos ? std::string::npos
                                              : comma - start);
        if (!parseUnsigned(item, UINT64_MAX, &n))
          return fail(kUsageError, "--prompt-ids: '" + item +
                                       "' is not a token id (expected "
                                       "comma-separated non-negative "
                                       "integers)");
        if (n >= uint64_t(spec.vocabSize))
          return fail(kUsageError,
                      "--prompt-ids: token id " + std::to_string(n) +
                          " is out of range for vocab size " +
                          std::to_string(spec.vocabSize));
        opts->prompt.push_back(int32_t(n));
        if (comma == std::string::npos)
          break;
        start = comma + 1;
      }
    }
  }

  // Batch mode takes prompts and lengths from the requests file.
  if (!opts->requests.empty()) {
    if (opts->promptGiven)
      return fail(kUsageError, "--prompt-ids cannot be used with --requests "
                               "(each request has its own prompt_ids)");
    if (opts->maxNewGiven)
      return fail(kUsageError, "--max-new-tokens cannot be used with "
                               "--requests (each request has its own "
                               "max_new_tokens)");
    if (!opts->dumpLogits.empty())
      return fail(kUsageError, "--dump-logits cannot be used with --requests");
    if (!opts->dumpDecodeLogits.empty())
      return fail(kUsageError,
                  "--dump-decode-logits cannot be used with --requests");
    if (!opts->dumpMtpLogits.empty())
      return fail(kUsageError,
                  "--dump-mtp-logits cannot be used with --requests");
    if (opts->speculative)
      return fail(kUsageError, "--speculative=mtp cannot be used with "
                               "--requests (it decodes a single prompt)");
    return -1;
  }
  if (!opts->output.empty())
    return fail(kUsageError, "--output needs --requests");
  if (opts->maxBatchGiven)
    return fail(kUsageError, "--max-batch needs --requests");
  if (!opts->dumpMtpLogits.empty() && !opts->speculative)
    return fail(kUsageError, "--dump-mtp-logits needs --speculative=mtp");
  // One file each: a second write would replace the first.
  const std::pair<const char *, const std::string *> dumps[] = {
      {"--dump-logits", &opts->dumpLogits},
      {"--dump-decode-logits", &opts->dumpDecodeLogits},
      {"--dump-mtp-logits", &opts->dumpMtpLogits}};
  for (size_t a = 0; a < 3; ++a)
    for (size_t b = a + 1; b < 3; ++b)
      if (!dumps[a].second->empty() && *dumps[a].second == *dumps[b].second)
        return fail(kUsageError, std::string(dumps[a].first) + " and " +
                                     dumps[b].first + " name the same file '" +
                                     *dumps[a].second + "'");
  // The warm-up's last row reads the first generated token.
  if (!opts->dumpMtpLogits.empty() && opts->maxNewTokens < 1)
    return fail(kUsageError, "--dump-mtp-logits needs --max-new-tokens 1 or "
                             "more (the MTP warm-up reads the first "
                             "generated token)");

  // The compiled plan fixes the buffer and cache sizes.
  const int64_t n = int64_t(opts->prompt.size());
  const int64_t total = n + opts->maxNewTokens;
  const std::string rebuild =
      " (rebuild with ds-compile --max-seq-len=" + std::to_string(total) + ")";
  if (n > spec.prefillMaxTokens)
    return fail(kUsageError,
                "--prompt-ids: " + std::to_string(n) +
                    " tokens exceed the compiled prefill limit of " +
                    std::to_string(spec.prefillMaxTokens) + " tokens" +
                    rebuild);
  if (total > spec.maxSeqLen)
    return fail(kUsageError,
                "--max-new-tokens: " + std::to_string(n) + " prompt tokens + " +
                    std::to_string(opts->maxNewTokens) +
                    " new tokens exceed the compiled maximum sequence length "
                    "of " + std::to_string(spec.maxSeqLen) + rebuild);
  return -1;
}

/// Greedy choice of rows [from, n) of a program call: `program` wanting
/// tokens[i] = argmax of logits row i, plus logits and hidden states on the
/// host only where asked (a backend that takes the argmax itself then
/// copies nothing else; see Context::Outputs).
template <class Call>
void callGreedy(const char *program, Context &ctx, int64_t n, int64_t from,
                int32_t *tokens, const float *logits, bool wantLogits,
                bool wantHidden, Call call) {
  trace::Span span(program, "program", n);
  Context::Outputs out;
  out.logits = wantLogits;
  out.hidden = wantHidden;
  out.argmax = tokens;
  out.argmaxFrom = from;
  ctx.setOutputs(out);
  call();
  if (!ctx.argmaxDone()) {
    const int64_t vocab = ctx.spec().vocabSize;
    for (int64_t i = from; i < n; ++i)
      tokens[i] = argmaxRow(logits + i * vocab, vocab);
  }
  ctx.setOutputs(Context::Outputs());
}

double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start)
      .count();
}

double perSecond(int64_t tokens, double ms) {
  return ms > 0 ? double(tokens) * 1000.0 / ms : 0.0;
}

/// Sequence slots and their cache positions: the Context's paged KVCache,
/// or, for a model without cache layers, plain slot bookkeeping.
class Slots {
public:
  Slots(Context &ctx, int64_t maxSequences)
      : cache_(ctx.spec().cacheLayers > 0 ? &ctx.cache() : nullptr),
        live_(size_t(maxSequences), false) {}

  int32_t start(std::string *error) {
    if (cache_)
      return cache_->startSequence(error);
    for (size_t s = 0; s < live_.size(); ++s)
      if (!live_[s]) {
        live_[s] = true;
        return int32_t(s);
      }
    *error = "all " + std::to_string(live_.size()) + " sequence slots are live";
    return -1;
  }
  bool reserve(int32_t seq, int64_t tokens, std::string *error) {
    return !cache_ || cache_->reserve(seq, tokens, error);
  }
  void end(int32_t seq) {
    if (cache_)
      cache_->endSequence(seq);
    else
      live_[size_t(seq)] = false;
  }
  /// Whether `tokens` positions could never be reserved, even in an empty
  /// cache; then `error` says why.
  bool neverFits(int64_t tokens, std::string *error) const {
    if (!cache_)
      return false;
    const int64_t blocks =
        (tokens + KVCache::kBlockTokens - 1) / KVCache::kBlockTokens;
    if (blocks <= cache_->totalBlocks())
      return false;
    *error = "needs " + std::to_string(tokens) + " cache positions (" +
             std::to_string(blocks) + " blocks of " +
             std::to_string(KVCache::kBlockTokens) +
             "), more than the whole KV cache of " +
             std::to_string(cache_->totalBlocks()) +
             " blocks (DS_KV_BLOCKS)";
    return true;
  }

private:
  KVCache *cache_;
  std::vector<bool> live_;
};

/// Runs the MTP module over n tokens in calls of at most spec.mtpMaxTokens;
/// `logits` [n, vocab] gets every token's row when `wantLogits`; `tokens`
/// (at least min(n, spec.mtpMaxTokens) ints) is scratch for the argmax.
/// Returns the draft: argmax of the last token's row.
int32_t runMtp(Context &ctx, const ModelSpec &spec, const float *hiddenIn,
               const int32_t *ids, const int32_t *pos, int64_t n,
               const std::vector<int32_t> &seqs, float *logits,
               float *hiddenOut, bool wantLogits, int32_t *tokens) {
  const int64_t chunk = spec.mtpMaxTokens > 0 ? spec.mtpMaxTokens : n;
  for (int64_t b = 0; b < n; b += chunk) {
    const int64_t rows = std::min(chunk, n - b);
    ctx.setTokenSequences(seqs.data(), rows);
    float *l = logits + b * spec.vocabSize;
    // The draft is the last row's argmax; the MTP hidden states are unused.
    callGreedy("mtp", ctx, rows, rows - 1, tokens, l, wantLogits, false, [&] {
      spec.mtp(ctx, hiddenIn + b * spec.hiddenSize, ids + b, pos + b, rows, l,
               hiddenOut + b * spec.hiddenSize);
    });
    if (b + rows == n)
      return tokens[rows - 1];
  }
  return 0;
}

//===----------------------------------------------------------------------===//
// Single-prompt mode
//===----------------------------------------------------------------------===//

int runSingle(Context &ctx, const ModelSpec &spec, const Options &opts) {
  const int64_t n = int64_t(opts.prompt.size());
  const int64_t maxNew = opts.maxNewTokens;
  const int64_t vocab = spec.vocabSize;
  const int64_t hiddenSize = spec.hiddenSize;

  Slots slots(ctx, 1);
  std::string error;
  const int32_t slot = slots.start(&error);
  if (slot < 0)
    return fail(kRunError, error);
  if (!slots.reserve(slot, n + maxNew, &error))
    return fail(kRunError, "the KV cache cannot hold " +
                               std::to_string(n + maxNew) +
                               " positions: " + error);

  const int64_t rows = std::max<int64_t>(n, 2);
  std::vector<int32_t> seqs(size_t(rows), slot);
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    pos[size_t(i)] = int32_t(i);
  std::vector<float> logits(size_t(rows * vocab));
  std::vector<float> hidden(size_t(rows * hiddenSize));

  // tokens[i]: the greedy choice after row i of a program call.
  std::vector<int32_t> tokens(static_cast<size_t>(rows));
  auto start = Clock::now();
  ctx.setTokenSequences(seqs.data(), n);
  // The MTP warm-up reads the prefill's hidden states.
  callGreedy("prefill", ctx, n, n - 1, tokens.data(), logits.data(),
             !opts.dumpLogits.empty(), opts.speculative, [&] {
               spec.prefill(ctx, opts.prompt.data(), pos.data(), n,
                            logits.data(), hidden.data());
             });
  const double prefillMs = msSince(start);

  if (!opts.dumpLogits.empty()) {
    bool ok = !opts.writes ||
              writeNpy(opts.dumpLogits, logits.data(), n, vocab, &error);
    if (!ok)
      fail(kRunError, error);
    if (!agree(opts.world, ok, error))
      return kRunError;
  }

  // t: the prompt, then the generated tokens. The prefill's last row gives
  // the first new token.
  std::vector<int32_t> t(opts.prompt);
  if (maxNew > 0)
    t.push_back(tokens[size_t(n - 1)]);
  // --dump-decode-logits: row s holds the logits at position n + s, which
  // chose t[n + s + 1]. The rows go to the file as they come (rank 0), so a
  // long run holds none of them; the file is complete only at the end.
  // keepRow(r) files logits row r of the last decode call as the one that
  // chose the token about to be appended to t (rows come in order).
  const bool wantDecodeLogits = !opts.dumpDecodeLogits.empty();
  const int64_t decodeRows = maxNew > 1 ? maxNew - 1 : 0;
  NpyWriter decodeDump;
  std::string dumpError; // the first failed write; decoding goes on
  if (wantDecodeLogits) {
    bool ok = !opts.writes ||
              decodeDump.open(opts.dumpDecodeLogits, decodeRows, vocab, &error);
    if (!ok)
      fail(kRunError, error);
    if (!agree(opts.world, ok, error))
      return kRunError;
  }
  auto keepRow = [&](int64_t r) {
    const int64_t s = int64_t(t.size()) - n - 1;
    if (decodeDump.isOpen() && s < decodeRows)
      decodeDump.append(logits.data() + r * vocab, 1, &dumpError);
  };
  int64_t drafts = 0, accepted = 0;
  start = Clock::now();
  if (!opts.speculative) {
    // Greedy: each decode step feeds the previous token at the next
    // position.
    ctx.setTokenSequences(seqs.data(), 1);
    for (int64_t step = 1; step < maxNew; ++step) {
      int32_t tok = t.back();
      int32_t p = int32_t(n + step - 1);
      callGreedy("decode", ctx, 1, 0, tokens.data(), logits.data(),
                 wantDecodeLogits, false, [&] {
                   spec.decode(ctx, &tok, &p, 1, logits.data(), hidden.data());
                 });
      keepRow(0);
      t.push_back(tokens[0]);
    }
  } else if (maxNew > 1 || !opts.dumpMtpLogits.empty()) {
    // Warm the MTP module on the prompt: position i gets the main model's
    // hidden state at i and the token at i + 1; its last row drafts the
    // token at n + 1. (With one new token only --dump-mtp-logits wants it.)
    std::vector<float> mtpLogits(size_t(rows * vocab));
    std::vector<float> mtpHidden(size_t(rows * hiddenSize));
    int32_t draft =
        runMtp(ctx, spec, hidden.data(), t.data() + 1, pos.data(), n, seqs,
               mtpLogits.data(), mtpHidden.data(),
               !opts.dumpMtpLogits.empty(), tokens.data());
    if (!opts.dumpMtpLogits.empty()) {
      // Written outside the decode timing.
      const auto writeStart = Clock::now();
      bool ok = !opts.writes || writeNpy(opts.dumpMtpLogits, mtpLogits.data(),
                                         n, vocab, &error);
      if (!ok)
        fail(kRunError, error);
      if (!agree(opts.world, ok, error))
        return kRunError;
      start += Clock::now() - writeStart;
    }
    // m: position of the last accepted token. Each step verifies [t[m],
    // draft] at [m, m + 1]: row 0 gives t[m + 1]; when that is the draft,
    // row 1 (computed with the right token at m + 1) gives t[m + 2] too. A
    // rejected draft's cache rows at m + 1 are overwritten by the next step,
    // which writes position m + 1 again (the cache is keyed by position).
    int64_t m = n;
    while (int64_t(t.size()) - n < maxNew) {
      int32_t ids[2] = {t[size_t(m)], draft};
      int32_t p[2] = {int32_t(m), int32_t(m + 1)};
      ctx.setTokenSequences(seqs.data(), 2);
      // The MTP update reads the verified positions' hidden states.
      callGreedy("decode (verify)", ctx, 2, 0, tokens.data(), logits.data(),
                 wantDecodeLogits, true, [&] {
                   spec.decode(ctx, ids, p, 2, logits.data(), hidden.data());
                 });
      keepRow(0);
      t.push_back(tokens[0]);
      ++drafts;
      const bool ok = t.back() == draft;
      if (ok) {
        ++accepted;
        keepRow(1);
        t.push_back(tokens[1]);
      }
      if (int64_t(t.size()) - n >= maxNew)
        break; // the MTP update would only draft past the end
      // Update the MTP module on the verified positions: [m, m + 1] with
      // tokens [t[m + 1], t[m + 2]] when accepted, else [m] with t[m + 1].
      int32_t mtpIds[2] = {t[size_t(m + 1)], ok ? t[size_t(m + 2)] : 0};
      draft = runMtp(ctx, spec, hidden.data(), mtpIds, p, ok ? 2 : 1, seqs,
                     mtpLogits.data(), mtpHidden.data(), false,
                     tokens.data());
      m = int64_t(t.size()) - 1;
    }
    t.resize(size_t(n + maxNew)); // a last accepted draft may be one too many
  }
  const double decodeMs = msSince(start);
  const int64_t decoded = maxNew > 0 ? maxNew - 1 : 0;
  slots.end(slot);
  if (wantDecodeLogits) {
    bool ok =
        !opts.writes || (dumpError.empty() && decodeDump.commit(&dumpError));
    if (!ok)
      fail(kRunError, dumpError);
    if (!agree(opts.world, ok, dumpError))
      return kRunError;
  }

  std::string line = "tokens:";
  for (size_t i = size_t(n); i < t.size(); ++i)
    line += " " + std::to_string(t[i]);
  std::printf("%s\n", line.c_str());
  std::printf("timing: prefill %lld tokens in %.2f ms (%.1f tok/s), "
              "decode %lld tokens in %.2f ms (%.1f tok/s)\n",
              (long long)n, prefillMs, perSecond(n, prefillMs),
              (long long)decoded, decodeMs, perSecond(decoded, decodeMs));
  if (opts.speculative)
    std::printf("mtp.acceptance: %.3f (%lld/%lld), %.1f tok/s\n",
                drafts ? double(accepted) / double(drafts) : 0.0,
                (long long)accepted, (long long)drafts,
                perSecond(decoded, decodeMs));
  std::fflush(stdout);
  return 0;
}

//===----------------------------------------------------------------------===//
// Batch mode
//===----------------------------------------------------------------------===//

struct Request {
  int64_t line;       // 1-based line number in the requests file
  std::string idJson; // the id as JSON, echoed in the result
  std::vector<int32_t> prompt;
  int64_t maxNew;
};

/// Validates one request line; false with `error` (no prefix) if bad.
bool parseRequest(const std::string &text, const ModelSpec &spec,
                  Request *req, std::string *error) {
  Json root;
  std::string jsonError;
  if (!parseJson(text.data(), text.size(), &root, &jsonError)) {
    *error = "malformed JSON: " + jsonError;
    return false;
  }
  if (root.kind != Json::Object) {
    *error = "not a JSON object";
    return false;
  }
  const Json *id = root.get("id");
  const Json *prompt = root.get("prompt_ids");
  const Json *maxNew = root.get("max_new_tokens");
  if (!id || !prompt || !maxNew) {
    *error = std::string("missing \"") +
             (!id ? "id" : !prompt ? "prompt_ids" : "max_new_tokens") + "\"";
    return false;
  }
  if (id->kind == Json::String)
    req->idJson = jsonQuote(id->string);
  else if (id->kind == Json::Int)
    req->idJson = std::to_string(id->integer);
  else {
    *error = "\"id\" must be a string or an integer";
    return false;
  }
  if (prompt->kind != Json::Array) {
    *error = "\"prompt_ids\" must be an array of token ids";
    return false;
  }
  if (prompt->items.empty()) {
    *error = "\"prompt_ids\" is empty";
    return false;
  }
  for (const Json &t : prompt->items) {
    if (t.kind != Json::Int) {
      *error = "\"prompt_ids\" must be an array of token ids";
      return false;
    }
    if (t.integer < 0 || t.integer >= spec.vocabSize) {
      *error = "token id " + std::to_string(t.integer) +
               " is out of range for vocab size " +
               std::to_string(spec.vocabSize);
      return false;
    }
    req->prompt.push_back(int32_t(t.integer));
  }
  if (maxNew->kind != Json::Int || maxNew->integer < 0) {
    *error = "\"max_new_tokens\" must be a non-negative integer";
    return false;
  }
  req->maxNew = maxNew->integer;
  const int64_t n = int64_t(req->prompt.size());
  if (n > spec.prefillMaxTokens) {
    *error = std::to_string(n) + " prompt tokens exceed the compiled prefill "
             "limit of " + std::to_string(spec.prefillMaxTokens) + " tokens";
    return false;
  }
  if (req->maxNew > spec.maxSeqLen - n) {
    *error = std::to_string(n) + " prompt tokens + " +
             std::to_string(req->maxNew) +
             " new tokens exceed the compiled maximum sequence length of " +
             std::to_string(spec.maxSeqLen);
    return false;
  }
  return true;
}

/// Reads the requests file: the good requests in file order; bad lines are
/// reported (`error: FILE:LINE: ...`) and counted in `bad`. False (with
/// `error`) when the file cannot be read.
bool readRequests(const std::string &path, const ModelSpec &spec,
                  std::vector<Request> *requests, int64_t *bad,
                  std::string *error) {
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f) {
    *error = path + ": cannot open: " + std::strerror(errno);
    return false;
  }
  std::string text;
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0)
    text.append(buf, got);
  const bool readError = std::ferror(f) != 0;
  std::fclose(f);
  if (readError) {
    *error = path + ": read error";
    return false;
  }

  int64_t lineNo = 0;
  for (size_t begin = 0; begin < text.size();) {
    size_t nl = text.find('\n', begin);
    size_t end = nl == std::string::npos ? text.size() : nl;
    std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    ++lineNo;
    if (line.find_first_not_of(" \t\r") == std::string::npos)
      continue; // blank
    Request req;
    req.line = lineNo;
    std::string why;
    if (!parseRequest(line, spec, &req, &why)) {
      note("error: %s:%lld: %s\n", path.c_str(),
                   (long long)lineNo, why.c_str());
      ++*bad;
      continue;
    }
    requests->push_back(std::move(req));
  }
  return true;
}

/// Where the result lines go: stdout, or a temporary file next to --output
/// that replaces it at the end (so the output is never half-written).
class ResultSink {
public:
  bool open(const std::string &path, std::string *error) {
    path_ = path;
    if (path.empty()) {
      file_ = stdout;
      return true;
    }
    temp_ = path + ".tmp.XXXXXX";
    int fd = mkstemp(&temp_[0]);
    if (fd < 0) {
      *error = path + ": cannot create: " + std::strerror(errno);
      temp_.clear();
      return false;
    }
    // mkstemp makes the file 0600; give it the mode a plain create would.
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    file_ = fdopen(fd, "wb");
    if (!file_) {
      *error = path + ": cannot create: " + std::strerror(errno);
      ::close(fd);
      discard();
      return false;
    }
    return true;
  }
  void write(const std::string &line) {
    std::fputs(line.c_str(), file_);
    if (file_ == stdout)
      std::fflush(stdout); // results stream as requests finish
  }
  /// Renames the temporary file over --output.
  bool commit(std::string *error) {
    if (file_ == stdout) {
      std::fflush(stdout);
      return true;
    }
    bool ok = std::fflush(file_) == 0 && fsync(fileno(file_)) == 0;
    ok = std::fclose(file_) == 0 && ok;
    file_ = nullptr;
    if (!ok || std::rename(temp_.c_str(), path_.c_str()) != 0) {
      *error = path_ + ": cannot write: " + std::strerror(errno);
      discard();
      return false;
    }
    temp_.clear();
    return true;
  }
  ~ResultSink() {
    if (file_ && file_ != stdout)
      std::fclose(file_);
    discard();
  }

private:
  void discard() {
    if (!temp_.empty())
      std::remove(temp_.c_str());
    temp_.clear();
  }
  std::string path_, temp_;
  FILE *file_ = nullptr;
};

std::string resultLine(const Request &req, const std::vector<int32_t> &tokens,
                       double ttftMs, double totalMs) {
  std::string s = "{\"id\": " + req.idJson + ", \"tokens\": [";
  for (size_t i = 0; i < tokens.size(); ++i)
    s += (i ? ", " : "") + std::to_string(tokens[i]);
  char tail[128];
  std::snprintf(tail, sizeof tail,
                "], \"prompt_tokens\": %lld, \"ttft_ms\": %.2f, "
                "\"total_ms\": %.2f}\n",
                (long long)req.prompt.size(), ttftMs, totalMs);
  return s + tail;
}

int runBatch(const ModelSpec &spec, const Options &opts, Comm *world) {
  std::vector<Request> requests;
  int64_t bad = 0;
  std::string error;
  if (!readRequests(opts.requests, spec, &requests, &bad, &error))
    return fail(kRunError, error);
  ResultSink sink;
  bool opened = sink.open(opts.writes ? opts.output : std::string(), &error);
  if (!opened)
    fail(kRunError, error);
  if (!agree(world, opened, error))
    return kRunError;

  Context ctx(spec, opts.threads, opts.maxBatch);
  if (!prepare(ctx, opts, world))
    return kRunError; // the sink's destructor removes its temporary file

  const int64_t vocab = spec.vocabSize;
  const int64_t rows = std::max(spec.prefillMaxTokens, opts.maxBatch);
  std::vector<float> logits(size_t(rows * vocab));
  std::vector<float> hidden(size_t(rows * spec.hiddenSize));
  std::vector<int32_t> ids, pos, seqs, tokens(static_cast<size_t>(rows));

  struct Live {
    size_t req;
    int32_t slot;
    std::vector<int32_t> tokens;
    double ttftMs;
  };
  std::deque<size_t> queue;
  for (size_t i = 0; i < requests.size(); ++i)
    queue.push_back(i);
  std::vector<Live> running;
  Slots slots(ctx, opts.maxBatch);
  int64_t completed = 0, generated = 0, peak = 0;
  const auto start = Clock::now();
  // Decode steps alone (the benchmark's ms per step at a batch size).
  double decodeMs = 0.0;
  int64_t decodeCalls = 0, decodeRows = 0;

  auto finish = [&](const Live &l) {
    const Request &req = requests[l.req];
    sink.write(resultLine(req, l.tokens, l.ttftMs, msSince(start)));
    slots.end(l.slot);
    ++completed;
    generated += int64_t(l.tokens.size());
  };

  while (!queue.empty() || !running.empty()) {
    // Admit from the head of the queue while a slot is free and the cache
    // can hold the whole request (prompt + max_new_tokens positions).
    while (!queue.empty() && int64_t(running.size()) < opts.maxBatch) {
      const Request &req = requests[queue.front()];
      const int64_t n = int64_t(req.prompt.size());
      const int64_t need = n + req.maxNew;
      std::string why;
      if (slots.neverFits(need, &why)) {
        note("error: %s:%lld: %s\n", opts.requests.c_str(),
                     (long long)req.line, why.c_str());
        ++bad;
        queue.pop_front();
        continue;
      }
      const int32_t slot = slots.start(&why);
      if (slot < 0)
        break; // cannot happen: running < maxBatch slots
      if (!slots.reserve(slot, need, &why)) {
        slots.end(slot);
        if (!running.empty())
          break; // back-pressure: wait for running requests to finish
        note("error: %s:%lld: the KV cache cannot hold %lld "
                     "positions: %s\n", opts.requests.c_str(),
                     (long long)req.line, (long long)need, why.c_str());
        ++bad;
        queue.pop_front();
        continue;
      }
      const size_t index = queue.front();
      queue.pop_front();
      peak = std::max<int64_t>(peak, int64_t(running.size()) + 1);

      // Prefill alone (the prefill program is single-sequence).
      pos.resize(size_t(n));
      for (int64_t i = 0; i < n; ++i)
        pos[size_t(i)] = int32_t(i);
      seqs.assign(size_t(n), slot);
      ctx.setTokenSequences(seqs.data(), n);
      callGreedy("prefill", ctx, n, n - 1, tokens.data(), logits.data(), false,
                 false, [&] {
                   spec.prefill(ctx, req.prompt.data(), pos.data(), n,
                                logits.data(), hidden.data());
                 });
      Live l{index, slot, {}, 0.0};
      if (req.maxNew > 0)
        l.tokens.push_back(tokens[size_t(n - 1)]);
      l.ttftMs = msSince(start);
      if (int64_t(l.tokens.size()) >= req.maxNew)
        finish(l);
      else
        running.push_back(std::move(l));
    }
    if (running.empty())
      continue;

    // One decode call: every running request's last token at its next
    // position, in its own slot.
    const int64_t b = int64_t(running.size());
    ids.resize(size_t(b));
    pos.resize(size_t(b));
    seqs.resize(size_t(b));
    for (int64_t i = 0; i < b; ++i) {
      const Live &l = running[size_t(i)];
      ids[size_t(i)] = l.tokens.back();
      pos[size_t(i)] = int32_t(requests[l.req].prompt.size() +
                               l.tokens.size() - 1);
      seqs[size_t(i)] = l.slot;
    }
    ctx.setTokenSequences(seqs.data(), b);
    const auto step = Clock::now();
    callGreedy("decode", ctx, b, 0, tokens.data(), logits.data(), false, false,
               [&] {
                 spec.decode(ctx, ids.data(), pos.data(), b, logits.data(),
                             hidden.data());
               });
    decodeMs += msSince(step);
    ++decodeCalls;
    decodeRows += b;
    std::vector<Live> still;
    for (int64_t i = 0; i < b; ++i) {
      Live &l = running[size_t(i)];
      l.tokens.push_back(tokens[size_t(i)]);
      if (int64_t(l.tokens.size()) >= requests[l.req].maxNew)
        finish(l);
      else
        still.push_back(std::move(l));
    }
    running.swap(still);
  }
  const double seconds = msSince(start) / 1000.0;

  if (!sink.commit(&error))
    return fail(kRunError, error);
  note("batch: %lld requests, %lld tokens in %.2f s (%.1f tok/s), "
               "max batch %lld, %lld decode steps (mean batch %.1f, %.3f ms "
               "each)\n",
               (long long)completed, (long long)generated, seconds,
               seconds > 0 ? double(generated) / seconds : 0.0,
               (long long)peak, (long long)decodeCalls,
               decodeCalls ? double(decodeRows) / double(decodeCalls) : 0.0,
               decodeCalls ? decodeMs / double(decodeCalls) : 0.0);
  return bad ? kRunError : 0;
}

/// After a successful run: rank 0 writes DS_TRACE's file.
int withTrace(int code) {
  if (code != 0 || !trace::enabled() || gRank != 0)
    return code;
  size_t count = 0;
  std::string error;
  if (!trace::write(&count, &error))
    return fail(kRunError, error);
  note("trace: %zu spans in %s\n", count, std::getenv("DS_TRACE"));
  return 0;
}

} // namespace

int dsrt::runMain(int argc, char **argv, const ModelSpec &spec, Comm *world) {
  const int64_t ranks = int64_t(spec.mesh[0]) * spec.mesh[1] * spec.mesh[2] *
                        spec.mesh[3];
  gRank = world ? world->rank() : 0;
  if (gRank != 0 && !std::freopen("/dev/null", "w", stdout))
    return kRunError;
  if ((world ? world->size() : 1) != ranks)
    return fail(kRunError,
                "this model was compiled for " + std::to_string(ranks) +
                    " ranks (tp x ep x pp x dp = " +
                    std::to_string(spec.mesh[0]) + " x " +
                    std::to_string(spec.mesh[1]) + " x " +
                    std::to_string(spec.mesh[2]) + " x " +
                    std::to_string(spec.mesh[3]) + ") but runs on " +
                    std::to_string(world ? world->size() : 1) +
                    ": start it with mpirun -np " + std::to_string(ranks));
  Options opts;
  unsigned hw = std::thread::hardware_concurrency();
  opts.threads = hw ? int(hw) : 1;
  int code = parseArgs(argc, argv, spec, &opts);
  if (code >= 0)
    return code;
  opts.writes = gRank == 0;
  opts.world = world;
  if (!opts.requests.empty())
    return withTrace(runBatch(spec, opts, world));

  Context ctx(spec, opts.threads, 1);
  if (!prepare(ctx, opts, world))
    return kRunError;
  return withTrace(runSingle(ctx, spec, opts));
}
