//===- Main.cpp - the compiled executable's command line ------------------===//
//
//   OUT [--weights PATH] [--prompt-ids 1,2,3] [--max-new-tokens N]
//       [--dump-logits FILE.npy] [--seed N] [--threads N] [--help]
//
// stdout carries exactly two lines, `tokens: ...` and `timing: ...`, so
// scripts can parse it; everything else is an `error: ` line on stderr.
// Usage errors exit 2, load and run errors 1.
//
//===----------------------------------------------------------------------===//

#include "ds/Runtime/Npy.h"
#include "ds/Runtime/Runtime.h"

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

using namespace dsrt;

namespace {

constexpr int kUsageError = 2;
constexpr int kRunError = 1;
constexpr uint64_t kMaxThreads = 4096;

struct Options {
  std::string weights; // empty: random weights from `seed`
  std::vector<int32_t> prompt{1, 2, 3, 4, 5, 6, 7, 8};
  int64_t maxNewTokens = 16;
  std::string dumpLogits; // empty: none
  uint64_t seed = 0;
  int threads = 1;
};

int fail(int code, const std::string &message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return code;
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

void printUsage(const char *prog, const ModelSpec &spec, int threads) {
  std::printf(
      "usage: %s [options]\n"
      "\n"
      "Greedy generation with the compiled model '%s': vocab size %lld, at\n"
      "most %lld positions (prompt + new tokens), prompts of at most %lld\n"
      "tokens.\n"
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
      "  --seed N                seed of the random weights (default 0)\n"
      "  --threads N             worker threads (default %d, the hardware\n"
      "                          threads)\n"
      "  --help                  print this text\n"
      "\n"
      "Values may also be given as --flag=value. Prints 'tokens: ID ...' (the\n"
      "generated ids) and a 'timing:' line on stdout.\n",
      prog, spec.name, (long long)spec.vocabSize, (long long)spec.maxSeqLen,
      (long long)spec.prefillMaxTokens, (long long)spec.vocabSize, threads);
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
        flag != "--seed" && flag != "--threads")
      return fail(kUsageError, "unknown flag '" + flag + "' (see --help)");
    if (!hasValue) {
      // A following flag is not a value: `--weights --seed 1` is a mistake.
      if (i + 1 >= argc ||
          std::string(argv[i + 1]).compare(0, 2, "--") == 0)
        return fail(kUsageError, flag + ": missing value");
      value = argv[++i];
    }

    uint64_t n = 0;
    if (flag == "--weights" || flag == "--dump-logits") {
      if (value.empty())
        return fail(kUsageError, flag + ": missing value");
      (flag == "--weights" ? opts->weights : opts->dumpLogits) = value;
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
    } else { // --prompt-ids
      opts->prompt.clear();
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

/// Index of the largest value; the lowest index wins ties (NaN never wins).
int32_t argmax(const float *row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (row[i] > row[best])
      best = i;
  return int32_t(best);
}

double msSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - start)
      .count();
}

double perSecond(int64_t tokens, double ms) {
  return ms > 0 ? double(tokens) * 1000.0 / ms : 0.0;
}

} // namespace

int dsrt::runMain(int argc, char **argv, const ModelSpec &spec) {
  Options opts;
  unsigned hw = std::thread::hardware_concurrency();
  opts.threads = hw ? int(hw) : 1;
  int code = parseArgs(argc, argv, spec, &opts);
  if (code >= 0)
    return code;

  Context ctx(spec, opts.threads);
  if (!opts.weights.empty()) {
    std::string error;
    if (!ctx.loadWeights(opts.weights.c_str(), &error))
      return fail(kRunError, error);
  } else {
    ctx.randomWeights(opts.seed);
  }

  const int64_t n = int64_t(opts.prompt.size());
  const int64_t vocab = spec.vocabSize;
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    pos[size_t(i)] = int32_t(i);
  std::vector<float> logits(static_cast<size_t>(n * vocab));

  auto start = std::chrono::steady_clock::now();
  spec.prefill(ctx, opts.prompt.data(), pos.data(), n, logits.data());
  const double prefillMs = msSince(start);

  if (!opts.dumpLogits.empty()) {
    std::string error;
    if (!writeNpy(opts.dumpLogits, logits.data(), n, vocab, &error))
      return fail(kRunError, error);
  }

  // Greedy: the prefill's last row gives the first new token, then each
  // decode step feeds the previous token at the next position.
  std::vector<int32_t> tokens;
  if (opts.maxNewTokens > 0)
    tokens.push_back(argmax(logits.data() + (n - 1) * vocab, vocab));
  start = std::chrono::steady_clock::now();
  for (int64_t step = 1; step < opts.maxNewTokens; ++step) {
    int32_t tok = tokens.back();
    int32_t p = int32_t(n + step - 1);
    spec.decode(ctx, &tok, &p, 1, logits.data());
    tokens.push_back(argmax(logits.data(), vocab));
  }
  const double decodeMs = msSince(start);
  const int64_t decoded = opts.maxNewTokens > 0 ? opts.maxNewTokens - 1 : 0;

  std::string line = "tokens:";
  for (int32_t t : tokens)
    line += " " + std::to_string(t);
  std::printf("%s\n", line.c_str());
  std::printf("timing: prefill %lld tokens in %.2f ms (%.1f tok/s), "
              "decode %lld tokens in %.2f ms (%.1f tok/s)\n",
              (long long)n, prefillMs, perSecond(n, prefillMs),
              (long long)decoded, decodeMs, perSecond(decoded, decodeMs));
  std::fflush(stdout);
  return 0;
}
