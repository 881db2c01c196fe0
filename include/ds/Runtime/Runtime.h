//===- Runtime.h - libdsrt: the API emitted code calls ----------*- C++ -*-===//
//
// The runtime knows no MLIR. A compiled model is a ModelSpec (weights, RoPE
// tables, cache geometry, memory plan) plus two programs, `prefill` and
// `decode`, emitted as C++ that call the kernels below in launch order on
// buffers carved from one arena. `runMain` is the executable's main: it parses
// the CLI (DESIGN.md, fixed), loads weights, and runs greedy generation.
//
// Conventions: matrices are row-major float32; `ld*` is the row stride in
// elements, so a column slice of a wider buffer is (pointer + column, ld of
// the buffer). Linear weights are in the checkpoint's [out, in] layout.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RUNTIME_RUNTIME_H
#define DS_RUNTIME_RUNTIME_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace dsrt {

/// Storage dtype of a checkpoint tensor.
enum class DType : uint8_t { F32, BF16, F16, F8E4M3 };

/// Axes of the device mesh (#ds.plan); world rank
/// ((pp_i * dp + dp_i) * ep + ep_i) * tp + tp_i.
enum class MeshAxis : int32_t { TP = 0, EP = 1, PP = 2, DP = 3 };

/// How a weight is partitioned over one mesh axis (#ds.shard).
struct WeightShard {
  MeshAxis axis;
  /// >= 0: the checkpoint tensor is split evenly along this dimension over
  /// the axis' ranks; WeightSpec::shape is one part, and the rank at
  /// coordinate i reads part i.
  int32_t dim;
  /// >= 0: only the ranks at this coordinate of the axis hold the weight.
  int32_t owner;
};

/// A checkpoint tensor the compiled model reads.
struct WeightSpec {
  const char *name; ///< Hugging Face name, e.g. "model.layers.0.mlp.up_proj.weight".
  int32_t rank;     ///< 1 or 2.
  int64_t shape[2];
  /// How the runtime keeps it. F8E4M3: as e4m3 codes with one float32 scale
  /// per 128x128 block (Fp8Weight), never as a float copy: an F8_E4M3
  /// checkpoint tensor (with its "<name>_scale_inv") is kept as it is, a
  /// float one is quantized on load (scale = block amax / 448, round to
  /// nearest even). Anything else: converted to float32 on load, except
  /// that a BF16 checkpoint tensor of a 2-D kGemmOnly weight is kept in bf16
  /// (Context::bf16Weight; weight(i) is then null): bf16 -> float32 is
  /// exact, so the GEMMs convert weight panels on the fly and give bit for
  /// bit the float32 copy's results at half the memory and bandwidth. F32
  /// and F16 checkpoint tensors of such a weight still load as float32.
  ///
  /// randomWeights: stands for a checkpoint of the declared dtype. A weight
  /// declared BF16 gets the float random values rounded to bf16 (nearest
  /// even), kept in bf16 if it is a 2-D kGemmOnly weight and as float32
  /// values otherwise, so a BF16 model's random-weight outputs differ
  /// slightly from those of the float values (as a BF16 checkpoint of them
  /// would); F32 and F16 weights get the float values as float32, F8E4M3
  /// ones the float values quantized.
  DType dtype;
  /// kGemmOnly: only GEMM kernels (linearW, gatedUp, moeExpertsW, moeGate)
  /// read this weight, never through weight(i).
  uint32_t flags = 0;
  static constexpr uint32_t kGemmOnly = 1;
  /// Partitioning (multi-rank models); shape is then this rank's part.
  int32_t numShards = 0;
  WeightShard shards[3] = {};
};

/// A weight kept in FP8 (WeightSpec::dtype == F8E4M3).
struct Fp8Weight {
  const uint8_t *codes;  ///< [rows, cols] e4m3fn
  const float *scaleInv; ///< [ceil(rows/128), ceil(cols/128)]: w = code * scale
  int64_t rows, cols;
};

/// What a GEMM does with its activations when its weight is FP8.
enum class ActQuant : int32_t {
  None = 0, ///< float32 activations (weight-only FP8: the dequantized model)
  Fp8 = 1,  ///< DeepSeek-V3's recipe: each row quantized to e4m3 per 128
            ///< columns (scale = tile amax / 448) before the product
};

/// Rotary embedding over `dim` interleaved dims (pairs (2i, 2i+1)).
struct RopeSpec {
  int64_t dim;
  double theta;
  bool yarn;
  double factor;
  int64_t originalMaxPositionEmbeddings;
  double betaFast, betaSlow, mscale, mscaleAllDim;
};

/// MoE routing configuration (DESIGN.md "The ds dialect").
struct MoERouting {
  enum Scoring : int32_t { Sigmoid = 0, Softmax = 1 };
  enum Method : int32_t { Greedy = 0, GroupLimitedGreedy = 1, NoauxTC = 2 };
  int64_t experts, topK, nGroup, topkGroup;
  Scoring scoring;
  Method method;
  bool normTopk;
  double scale; ///< routed_scaling_factor
};

/// A MoE layer's shared expert, run by moeExpertsSharedW: SwiGLU weights by
/// index (gate/up [inter, hidden], down [hidden, inter]) and a scratch
/// buffer [n, inter] for its intermediate.
struct SharedExpert {
  int64_t gate, up, down, inter;
  float *hidden;
  int64_t ldh;
};

/// The residual add + RMSNorm after a MoE layer (moeExpertsSharedNormW):
/// sum = residual + y, normed = rmsNorm(sum, weight, eps), as addRmsNorm.
struct AddNorm {
  const float *residual;
  int64_t ldr;
  const float *weight;
  double eps;
  float *sum;
  int64_t lds;
  float *normed;
  int64_t ldn;
};

class Comm;
class Context;
class KVCache;

/// One emitted program: `n` tokens with ids `ids[0..n)` at positions
/// `pos[0..n)`, token i of sequence slot ctx.tokenSequence(i); writes logits
/// [n, vocab] (the rows from ctx.logitsRowsFrom(n) on: the rest are not
/// computed) and the final-normed hidden states [n, hidden] (the input of
/// the MTP module).
using ProgramFn = void (*)(Context &ctx, const int32_t *ids, const int32_t *pos,
                           int64_t n, float *logits, float *hidden);

/// The MTP module (depth 1): for token i, the main model's hidden state
/// hiddenIn[i] at position pos[i] and the id of the token at pos[i] + 1;
/// writes the draft logits [n, vocab] (predicting the token at pos[i] + 2)
/// and its hidden states [n, hidden]. Its attention uses cache layer
/// spec.cacheLayers - 1.
using MtpFn = void (*)(Context &ctx, const float *hiddenIn, const int32_t *ids,
                       const int32_t *pos, int64_t n, float *logits,
                       float *hiddenOut);

/// Everything the compiler knows that the runtime needs.
struct ModelSpec {
  const char *name;
  int64_t vocabSize, hiddenSize;
  const WeightSpec *weights;
  int64_t numWeights;
  const RopeSpec *ropes;
  int64_t numRopes;
  /// Latent KV cache: per layer (main layers, then the MTP layer if any),
  /// sequence and position, kvLoraRank latent values then qkRopeDim rope-key
  /// values; paged in blocks of KVCache::kBlockTokens positions.
  int64_t cacheLayers, kvLoraRank, qkRopeDim;
  int64_t maxSeqLen;   ///< positions per sequence (--max-seq-len)
  int64_t arenaBytes;  ///< from the static memory plan (max over programs)
  ProgramFn prefill;   ///< naive MLA; positions 0..n-1 of one fresh sequence
  int64_t prefillMaxTokens;
  ProgramFn decode;    ///< absorbed MLA over the latent cache; tokens of any
                       ///< live sequences (several per sequence allowed, in
                       ///< position order: speculative verification)
  int64_t decodeMaxTokens; ///< --max-batch: most tokens per decode call
  MtpFn mtp;               ///< null when the model has no MTP module
  int64_t mtpMaxTokens;    ///< most tokens per mtp call (prefillMaxTokens)
  /// Ranks along each MeshAxis (tp, ep, pp, dp); their product is the
  /// number of ranks the model was compiled for.
  int32_t mesh[4] = {1, 1, 1, 1};
  /// Called by runMain once the weights are loaded, before any program
  /// runs (the CUDA backend uploads them to the device here); false with
  /// `error` set stops the run. Null: nothing to do.
  bool (*prepare)(Context &ctx, std::string *error) = nullptr;
};

/// The paged latent KV cache: fixed blocks of kBlockTokens positions (all
/// layers of a position in one block) from a pool with a free list, and a
/// block table per sequence slot. Memory is taken as sequences grow and
/// returned when they end; running out is an error the caller handles
/// (back-pressure), never corruption.
class KVCache {
public:
  static constexpr int64_t kBlockTokens = 64;

  /// `rowFloats` = kvLoraRank + qkRopeDim; `numBlocks` blocks in the pool;
  /// at most `maxSequences` live sequences of at most `maxSeqLen` positions.
  KVCache(int64_t layers, int64_t rowFloats, int64_t numBlocks,
          int64_t maxSequences, int64_t maxSeqLen);
  ~KVCache();
  KVCache(const KVCache &) = delete;
  KVCache &operator=(const KVCache &) = delete;

  /// A free sequence slot (no blocks yet), or -1 with `error` set when all
  /// slots are live.
  int32_t startSequence(std::string *error);
  /// Makes positions [0, tokens) of `seq` addressable, taking blocks from the
  /// pool as needed. On failure (pool exhausted, tokens > maxSeqLen) nothing
  /// changes and `error` says why.
  bool reserve(int32_t seq, int64_t tokens, std::string *error);
  /// Returns the sequence's blocks to the pool and frees its slot.
  void endSequence(int32_t seq);
  /// Row of (layer, seq, position); the position must be reserved.
  float *row(int64_t layer, int32_t seq, int64_t position);
  /// Positions reserved for `seq` (a multiple of kBlockTokens).
  int64_t capacity(int32_t seq) const;
  /// Pool index of the block holding positions [64 b, 64 b + 64) of `seq`,
  /// or -1 if that block is not reserved (a device mirror of the pool uses
  /// the same block ids).
  int32_t blockId(int32_t seq, int64_t b) const;
  int64_t freeBlocks() const;
  int64_t totalBlocks() const;
  int64_t maxSequences() const;
  bool live(int32_t seq) const;

  struct Impl;

private:
  std::unique_ptr<Impl> impl_;
};

/// Splits [0, n) over the thread pool; fn(begin, end) runs once per chunk.
void parallelFor(Context &ctx, int64_t n,
                 void (*fn)(void *state, int64_t begin, int64_t end),
                 void *state);

/// Per-run state: weights (float32, or bf16 / FP8 where WeightSpec says),
/// the arena, the latent KV cache, RoPE tables, the thread pool.
class Context {
public:
  Context(const ModelSpec &spec, int threads, int64_t maxSequences = 1);
  ~Context();
  Context(const Context &) = delete;
  Context &operator=(const Context &) = delete;

  const ModelSpec &spec() const;
  int threads() const;
  /// float32 data of weight `index` (into spec().weights); null for a
  /// weight kept in FP8 or bf16.
  const float *weight(int64_t index) const;
  /// The FP8 form of weight `index`; null unless it is kept in FP8.
  const Fp8Weight *fp8Weight(int64_t index) const;
  /// The bf16 bits [rows, cols] (row-major) of weight `index`; null unless
  /// it is kept in bf16 (see WeightSpec::dtype).
  const uint16_t *bf16Weight(int64_t index) const;
  /// Bytes of weight data held: float32 copies, bf16 copies, FP8 codes and
  /// block scales.
  int64_t weightBytes() const;
  /// Base of the arena; buffers are at plan offsets (bytes, 64-aligned).
  char *arena();
  /// The paged latent cache. The Context creates it with
  /// `maxSequences` slots (runMain: --max-batch, at least 1) and enough blocks
  /// for all of them at maxSeqLen positions, unless DS_KV_BLOCKS says how many.
  KVCache &cache();
  /// Latent cache row of (layer, sequence slot, position).
  float *cacheRow(int64_t layer, int32_t seq, int64_t position);
  /// Sequence slots of the tokens of the next program call (copied); until
  /// set, every token is in slot 0.
  void setTokenSequences(const int32_t *seq, int64_t n);
  int32_t tokenSequence(int64_t i) const;

  /// What the caller of the next program calls needs back. A program
  /// always computes hidden states, and the logits rows from
  /// logitsRowsFrom(n) on (every row unless only the argmax of rows from
  /// argmaxFrom is wanted); a backend whose results live elsewhere (the
  /// CUDA backend: on the device) copies them out only when wanted. With
  /// `argmax` set, each logits row's argmax (runMain's rule: lowest index
  /// of the largest value, NaN never wins) is wanted in argmax[i] for rows
  /// i >= argmaxFrom: a backend that computes it itself sets argmaxDone();
  /// one that does not delivers those logits rows whatever `logits` says,
  /// and the caller takes the argmax (the CPU backend).
  struct Outputs {
    bool logits = true;
    bool hidden = true;
    int32_t *argmax = nullptr;
    int64_t argmaxFrom = 0;
  };
  /// Until set: logits and hidden states, no argmax. Clears argmaxDone.
  void setOutputs(const Outputs &outputs);
  const Outputs &outputs() const;
  void setArgmaxDone();
  bool argmaxDone() const;
  /// The first of a program call's n logits rows anyone reads: 0 when the
  /// logits are wanted (or no argmax is), else argmaxFrom. A program's
  /// lm_head (logitsW) computes rows from here on only: a greedy prefill
  /// without --dump-logits needs its last row, not a vocab-wide row per
  /// prompt token.
  int64_t logitsRowsFrom(int64_t n) const;

  /// Places this Context on the device mesh: `world` (not owned; it must
  /// outlive the Context) has exactly as many ranks as spec().mesh
  /// multiplies to, and is split into one communicator per axis. Call it
  /// before loading weights: which weights a rank holds, and which part of
  /// them, follows from its coordinates. Without it the Context is rank 0
  /// of a one-rank mesh (and a multi-rank spec cannot load weights).
  bool setComm(Comm *world, std::string *error);
  /// This rank's coordinate on `axis`, and the axis' size.
  int meshCoord(MeshAxis axis) const;
  int meshSize(MeshAxis axis) const;
  /// Rank in the world communicator (0 without one).
  int rank() const;
  /// The ranks of `axis` that share this rank's other coordinates; null
  /// before setComm.
  Comm *comm(MeshAxis axis);
  /// The ranks that share this rank's tp and pp coordinates (ep x dp of
  /// them, ordered by ep_i * dp + dp_i): the routed experts of a MoE layer
  /// are split over them. The ep communicator when dp is 1.
  Comm *expertComm();
  /// Whether this rank holds weight `index` (placement shards).
  bool holdsWeight(int64_t index) const;

  /// Loads weights from a .safetensors file or a checkpoint directory
  /// (model.safetensors.index.json or *.safetensors). Returns false and sets
  /// `error` (naming the file and tensor) on failure.
  bool loadWeights(const char *path, std::string *error);
  /// Deterministic random weights from `seed`.
  void randomWeights(uint64_t seed);

  struct Impl;
  Impl &impl() { return *impl_; }

private:
  std::unique_ptr<Impl> impl_;
};

/// The executable's main (CLI in DESIGN.md). A model compiled for more
/// than one rank needs `world` (runMainMpi, in dsrt-mpi, creates it); only
/// its rank 0 prints and writes files.
int runMain(int argc, char **argv, const ModelSpec &spec, Comm *world = nullptr);

/// main of a multi-rank executable: creates the MPI communicator and calls
/// runMain. Defined in dsrt-mpi.
int runMainMpi(int argc, char **argv, const ModelSpec &spec);

/// A program of a model compiled with pp > 1 or dp > 1 (the emitted
/// prefill/decode wrap their stage programs in this). This rank's
/// data-parallel replica takes the tokens of the sequence slots s with
/// s % dp == its dp coordinate; its pipeline stage runs `stages[pp coord]`
/// on them in pp micro-batches of whole sequences (possibly empty; every
/// rank runs the same number), receiving each micro-batch's rows from the
/// previous stage and sending them on as soon as it is done, so that stages
/// overlap. Afterwards the last stage broadcasts logits and hidden states
/// over pp and the replicas gather them over dp: every rank returns all n
/// rows, as a one-rank program would.
void runPartitioned(Context &ctx, const ProgramFn *stages, const int32_t *ids,
                    const int32_t *pos, int64_t n, float *logits,
                    float *hidden);

/// The MTP program of such a model: `lastStage` runs on the last pipeline
/// stage (the others wait for its outputs), on this replica's tokens.
void runPartitionedMtp(Context &ctx, MtpFn lastStage, const float *hiddenIn,
                       const int32_t *ids, const int32_t *pos, int64_t n,
                       float *logits, float *hiddenOut);

namespace cpu {

/// out[i] = table[ids[i]]; table is [vocab, hidden].
void embedding(Context &ctx, const float *table, int64_t vocab, int64_t hidden,
               const int32_t *ids, int64_t n, float *out, int64_t ldo);

/// y = x / sqrt(mean(x^2) + eps) * w over rows of width d, in float32.
void rmsNorm(Context &ctx, const float *x, int64_t ldx, const float *w,
             int64_t n, int64_t d, double eps, float *y, int64_t ldy);

/// y[n, out] = x[n, in] * w^T with w [out, in] (BLAS sgemm).
void linear(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
            const float *w, int64_t out, float *y, int64_t ldy);

/// y = a + b over [n, d].
void add(Context &ctx, const float *a, int64_t lda, const float *b,
         int64_t ldb, int64_t n, int64_t d, float *y, int64_t ldy);

/// y = silu(gate) * up over [n, d].
void swiglu(Context &ctx, const float *gate, int64_t ldg, const float *up,
            int64_t ldu, int64_t n, int64_t d, float *y, int64_t ldy);

/// Rotates, in place, dims [offset, offset + rope.dim) of each of `heads`
/// heads (head h starts at column h * headStride) of each row i by position
/// pos[i], pairs (2j, 2j+1) as complex numbers; table `rope` of ctx.
void rope(Context &ctx, float *x, int64_t ldx, int64_t n, int64_t heads,
          int64_t headStride, int64_t offset, const int32_t *pos,
          int64_t ropeIndex);

/// Stores the latent [n, kvLoraRank] and rope key [n, qkRopeDim] of `n`
/// tokens at positions pos[] of cache layer `layer`.
void kvCacheWrite(Context &ctx, int64_t layer, const float *latent,
                  int64_t ldl, const float *krope, int64_t ldk,
                  const int32_t *pos, int64_t n);

/// MLA prefill, naive form, causal over the n tokens (positions 0..n-1):
/// q [n, heads*(nope+rope)], kv [n, heads*(nope+vdim)] (per head: k_nope then
/// v, the up-projected latent), krope [n, rope] shared by all heads;
/// out [n, heads*vdim].
void mlaAttentionNaive(Context &ctx, const float *q, int64_t ldq,
                       const float *kv, int64_t ldkv, const float *krope,
                       int64_t ldk, int64_t n, int64_t heads, int64_t nope,
                       int64_t rope, int64_t vdim, double scale, float *out,
                       int64_t ldo);

/// MLA decode, absorbed form, over cache layer `layer`: token i attends to
/// cache positions [0, pos[i]]. W_UK (rows h*(nope+vdim) .. +nope of kvB,
/// [heads*(nope+vdim), kvLoraRank]) is folded into the query, W_UV (the next
/// vdim rows) into the output. out [n, heads*vdim].
void mlaAttentionAbsorbed(Context &ctx, int64_t layer, const float *q,
                          int64_t ldq, const float *kvB, const int32_t *pos,
                          int64_t n, int64_t heads, int64_t nope, int64_t rope,
                          int64_t vdim, double scale, float *out, int64_t ldo);

/// Routing from router logits [n, experts]: writes the chosen experts
/// idx [n, topK] and their weights [n, topK]. `bias` (noaux_tc only) may be
/// null.
void moeRoute(Context &ctx, const float *logits, int64_t ldl, int64_t n,
              const float *bias, const MoERouting &routing, int32_t *idx,
              float *weights);

/// y[n, hidden] = sum_k weights[i,k] * expert_{idx[i,k]}(x[i]) with SwiGLU
/// experts (gate/up [inter, hidden], down [hidden, inter]); overwrites y.
void moeExperts(Context &ctx, const float *x, int64_t ldx, int64_t n,
                int64_t hidden, int64_t inter, const int32_t *idx,
                const float *weights, int64_t topK, const float *const *gate,
                const float *const *up, const float *const *down,
                int64_t experts, float *y, int64_t ldy);

//===--------------------------------------------------------------------===//
// Kernels on weights by index: float32 or FP8 storage (ActQuant applies to
// FP8 weights only), and the fused kernels of the dsk-fuse pass.
//===--------------------------------------------------------------------===//

/// y[n, out] = x[n, in] * W^T, W = weight `weight` ([out, in]); float32
/// accumulation in every case.
void linearW(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
             int64_t weight, int64_t out, float *y, int64_t ldy, ActQuant act);

/// linearW into a program's logits output: rows [ctx.logitsRowsFrom(n), n)
/// only; the rows before are left as they are (nobody reads them).
void logitsW(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
             int64_t weight, int64_t out, float *y, int64_t ldy, ActQuant act);

/// Two GEMMs of one input: ya = x * Wa^T, yb = x * Wb^T (one launch where
/// the backend can).
void linearPairW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t in, int64_t wa, int64_t outA, float *ya, int64_t ldya,
                 int64_t wb, int64_t outB, float *yb, int64_t ldyb,
                 ActQuant act);

/// Fused GEMM + residual add: y += x * W^T, as linearW into a buffer and
/// add(y, that) would compute it.
void linearAddW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                int64_t in, int64_t weight, int64_t out, float *y, int64_t ldy,
                ActQuant act);

/// linearW, then addRmsNorm(norm.residual, y) into norm.sum and norm.normed
/// (dsk-fuse's linear with its norm epilogue); y is written too.
void linearNormW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t in, int64_t weight, int64_t out, float *y, int64_t ldy,
                 const AddNorm &norm, ActQuant act);

/// moeExperts with expert weights by index (gate/up/down[experts]).
void moeExpertsW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t hidden, int64_t inter, const int32_t *idx,
                 const float *weights, int64_t topK, const int64_t *gate,
                 const int64_t *up, const int64_t *down, int64_t experts,
                 float *y, int64_t ldy, ActQuant act);

/// moeExpertsW, then the shared expert's output added: y = routed sum +
/// down(silu(x Wgate^T) * (x Wup^T)), in that order (as moeExpertsW, gatedUp
/// into shared.hidden and linearAddW compute it).
void moeExpertsSharedW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                       int64_t hidden, int64_t inter, const int32_t *idx,
                       const float *weights, int64_t topK, const int64_t *gate,
                       const int64_t *up, const int64_t *down, int64_t experts,
                       const SharedExpert &shared, float *y, int64_t ldy,
                       ActQuant act);

/// moeExpertsSharedW, then addRmsNorm(norm.residual, y) into norm.sum and
/// norm.normed (dsk-fuse's moe_experts with its norm epilogue); y is
/// written too.
void moeExpertsSharedNormW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                           int64_t hidden, int64_t inter, const int32_t *idx,
                           const float *weights, int64_t topK,
                           const int64_t *gate, const int64_t *up,
                           const int64_t *down, int64_t experts,
                           const SharedExpert &shared, float *y, int64_t ldy,
                           const AddNorm &norm, ActQuant act);

/// moeExpertsW over the ranks of Context::expertComm (ep x dp), rank g
/// holding the weights of experts [g * E / G, (g + 1) * E / G). The ep ranks
/// of a replica have the same n tokens (replicas differ): this rank computes
/// tokens [r * n / ep, (r + 1) * n / ep) by sending each to the ranks that
/// hold its chosen experts (all-to-all of only those rows, hidden floats
/// each), summing the weighted results sent back, and all-gathering the
/// finished rows over ep, so that y is complete on every rank.
void moeExpertsEP(Context &ctx, const float *x, int64_t ldx, int64_t n,
                  int64_t hidden, int64_t inter, const int32_t *idx,
                  const float *weights, int64_t topK, const int64_t *gate,
                  const int64_t *up, const int64_t *down, int64_t experts,
                  float *y, int64_t ldy, ActQuant act);

/// Point to point over `axis` (the pipeline: MeshAxis::PP) with the rank at
/// coordinate `peer` that shares this rank's other coordinates: x [n, d] is
/// sent, y [n, d] received (the peer sends exactly n rows).
void sendRows(Context &ctx, MeshAxis axis, const float *x, int64_t ldx,
              int64_t n, int64_t d, int64_t peer);
void recvRows(Context &ctx, MeshAxis axis, float *y, int64_t ldy, int64_t n,
              int64_t d, int64_t peer);

/// In place: x [n, d] becomes its sum over the ranks of `axis`.
void allReduce(Context &ctx, MeshAxis axis, float *x, int64_t ldx, int64_t n,
               int64_t d);

/// y [n, d * ranks] = the ranks' x [n, d] side by side, in rank order.
void allGatherColumns(Context &ctx, MeshAxis axis, const float *x, int64_t ldx,
                      int64_t n, int64_t d, float *y, int64_t ldy);

/// Fused residual add + RMSNorm: sum = a + b, y = rmsNorm(sum, w, eps).
void addRmsNorm(Context &ctx, const float *a, int64_t lda, const float *b,
                int64_t ldb, int64_t n, int64_t d, const float *w, double eps,
                float *sum, int64_t lds, float *y, int64_t ldy);

/// Fused RoPE + latent-cache write: rotates krope [n, rope.dim] in place
/// (table ropeIndex) and stores latent and krope at cache layer `layer`.
void ropeKvCacheWrite(Context &ctx, int64_t layer, const float *latent,
                      int64_t ldl, float *krope, int64_t ldk,
                      const int32_t *pos, int64_t n, int64_t ropeIndex);

/// Fused MLA prologue: rope(q) (heads x headStride columns, rope columns at
/// offset), then ropeKvCacheWrite; with normW, the cache gets
/// rmsNorm(latent, normW, eps) instead of latent (computed as rmsNorm does).
void qkRopeCacheWrite(Context &ctx, int64_t layer, float *q, int64_t ldq,
                      int64_t heads, int64_t headStride, int64_t offset,
                      const float *latent, int64_t ldl, float *krope,
                      int64_t ldk, const int32_t *pos, int64_t n,
                      int64_t ropeIndex, const float *normW, double eps);

/// qkRopeCacheWrite (heads of nope + rope columns, rope columns from nope),
/// then mlaAttentionAbsorbed: dsk.mla_attention_absorbed with its rope
/// prologue. Everything the prologue reads is read before out is written.
void mlaAttentionAbsorbedRope(Context &ctx, int64_t layer, float *q,
                              int64_t ldq, const float *kvB, const int32_t *pos,
                              int64_t n, int64_t heads, int64_t nope,
                              int64_t rope, int64_t vdim, double scale,
                              float *out, int64_t ldo, const float *latent,
                              int64_t ldl, float *krope, int64_t ldk,
                              int64_t ropeIndex, const float *normW,
                              double eps);

/// Fused gate/up GEMMs with the SwiGLU epilogue:
/// y = silu(x Wgate^T) * (x Wup^T), y [n, inter].
void gatedUp(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
             int64_t gate, int64_t up, int64_t inter, float *y, int64_t ldy,
             ActQuant act);

/// Fused router: logits = x Wgate^T (float32), then moeRoute.
void moeGate(Context &ctx, const float *x, int64_t ldx, int64_t n,
             int64_t hidden, int64_t weight, const float *bias,
             const MoERouting &routing, int32_t *idx, float *weights);

} // namespace cpu
} // namespace dsrt

#endif // DS_RUNTIME_RUNTIME_H
