//===- Weights.cpp - checkpoint and random weights into the Context -------===//
//
// Every weight the model declares is converted to a float32 copy in
// impl().storage (the kernels compute in float32); impl().weights[i] points
// at spec().weights[i]'s copy. The checkpoint's own dtype decides the
// conversion, so e.g. an F32 checkpoint of a BF16 model loads as well.
//
// Exception: a 2-D weight declared F8E4M3 is kept in FP8 (impl().fp8[i]:
// e4m3 codes + one float scale per 128x128 block; weights[i] stays null).
// An F8_E4M3 checkpoint tensor is copied as it is with its "_scale_inv"
// scales; a float one (F32/BF16/F16) and random weights are quantized block
// row by block row (quantizeE4M3BlockRow: scale = amax / 448, 1 for an
// all-zero block; code = floatToE4M3(w / scale), round to nearest even,
// saturating), never holding more than 128 float rows per thread. A 1-D
// F8E4M3 weight is kept in float32 like any other.
//
// Exception: a 2-D kGemmOnly weight (only GEMM kernels read it) is kept in
// bf16 (impl().bf16[i]; weights[i] stays null) when its checkpoint tensor is
// BF16 (copied as it is: converting it would be exact, so the GEMMs, which
// decode panels on the fly, give the float copy's results bit for bit), or,
// for random weights, when it is declared BF16.
//
// Random weights stand for a checkpoint of the declared dtype: a BF16
// weight's float random values are rounded to nearest even bf16 whether it
// is kept in bf16 or in float32 (a BF16 model's kv_b, norms and router then
// hold bf16 values, as its checkpoint's would, and the CUDA backend's bf16
// copies of them are exact). F16 and F32 weights keep the float values.
//
//===----------------------------------------------------------------------===//

#include "Convert.h"
#include "ContextImpl.h"
#include "ds/Runtime/Safetensors.h"

#include <algorithm>
#include <cstring>

using namespace dsrt;

namespace {

// Below this many elements a tensor is converted on the calling thread.
constexpr int64_t kParallelMin = 1 << 16;

/// Runs f(begin, end) over [0, n), on the Context's threads when `work`
/// (elements touched) makes that worth it.
template <class F>
void forRange(Context &ctx, int64_t n, int64_t work, F &f) {
  if (work < kParallelMin || n < 2) {
    f(int64_t(0), n);
    return;
  }
  parallelFor(
      ctx, n,
      [](void *state, int64_t begin, int64_t end) {
        (*static_cast<F *>(state))(begin, end);
      },
      &f);
}

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string quote(const std::string &s) { return "'" + s + "'"; }

bool keptInFp8(const WeightSpec &w) {
  return w.dtype == DType::F8E4M3 && w.rank == 2;
}

/// Whether weight `w` is kept in bf16 when its source (checkpoint tensor,
/// or the declared dtype for random weights) is `source`.
bool keptInBf16(const WeightSpec &w, DType source) {
  return !keptInFp8(w) && w.rank == 2 && (w.flags & WeightSpec::kGemmOnly) &&
         source == DType::BF16;
}

/// This rank's part of weight `w` (WeightSpec::shards): rows [r0, r0 + rows)
/// and columns [c0, c0 + cols) of the checkpoint tensor, whose shape is
/// `global` (a 1-D tensor is one row).
struct Part {
  WeightSpec global; ///< w with the checkpoint tensor's shape
  int64_t r0 = 0, c0 = 0, globalCols = 0;
  bool sliced = false;
};

Part partOf(const Context &ctx, const WeightSpec &w) {
  Part p;
  p.global = w;
  for (int32_t s = 0; s < w.numShards; ++s) {
    const WeightShard &shard = w.shards[s];
    if (shard.dim < 0 || shard.dim >= w.rank)
      continue;
    const int64_t size = ctx.meshSize(shard.axis);
    const int64_t at = ctx.meshCoord(shard.axis) * w.shape[shard.dim];
    p.global.shape[shard.dim] *= size;
    p.sliced |= size > 1;
    // Rank 2: dim 0 rows, dim 1 columns; rank 1: the one row's columns.
    if (w.rank == 2 && shard.dim == 0)
      p.r0 = at;
    else
      p.c0 = at;
  }
  p.globalCols = w.rank == 2 ? p.global.shape[1] : p.global.shape[0];
  return p;
}

/// Finds, checks and converts the "<name>_scale_inv" block scales of the
/// F8_E4M3 checkpoint tensor `t` (weight `w`, this rank's part `part` of it)
/// into `scales`: those of the part's blocks (a part starts on a block
/// boundary: the partition passes split FP8 weights on the block grid).
bool readScales(const Checkpoint &ckpt, const WeightSpec &w, const Tensor &t,
                const Part &part, std::vector<float> *scales,
                std::string *error) {
  // A 1-D tensor is one row; its scales are then [ceil(n/128)].
  const WeightSpec &g = part.global;
  const int64_t rows = g.rank == 2 ? g.shape[0] : 1;
  const int64_t cols = g.rank == 2 ? g.shape[1] : g.shape[0];
  const std::string scaleName = std::string(w.name) + "_scale_inv";
  const Tensor *s = ckpt.find(scaleName);
  if (!s) {
    *error = ckpt.path() + ": tensor " + quote(scaleName) +
             " not found (the block scales of the F8_E4M3 tensor " +
             quote(w.name) + ")";
    return false;
  }
  if (!s->supported || s->dtype == DType::F8E4M3) {
    *error = s->file->path() + ": tensor " + quote(scaleName) + " has dtype " +
             s->dtypeName + "; block scales must be F32, BF16 or F16";
    return false;
  }
  int64_t want[2] = {ceilDiv(rows, kFp8Block), ceilDiv(cols, kFp8Block)};
  const int64_t *wantShape = w.rank == 2 ? want : want + 1;
  if (s->shape.size() != size_t(w.rank) ||
      !std::equal(s->shape.begin(), s->shape.end(), wantShape)) {
    *error = s->file->path() + ": tensor " + quote(scaleName) +
             " has shape " + s->shapeString() + "; the block scales of " +
             quote(w.name) + " " + shapeString(g.shape, g.rank) + " need " +
             shapeString(wantShape, w.rank);
    return false;
  }
  if (!part.sliced) {
    scales->resize(size_t(s->numel()));
    convertToFloat(s->dtype, s->data, s->numel(), scales->data());
    return true;
  }
  if (part.r0 % kFp8Block != 0 || part.c0 % kFp8Block != 0) {
    *error = t.file->path() + ": tensor " + quote(w.name) +
             ": this rank's part starts at row " + std::to_string(part.r0) +
             ", column " + std::to_string(part.c0) +
             ", not on a 128x128 FP8 block boundary";
    return false;
  }
  const int64_t localRows = w.rank == 2 ? w.shape[0] : 1;
  const int64_t localCols = w.rank == 2 ? w.shape[1] : w.shape[0];
  const int64_t br = ceilDiv(localRows, kFp8Block), bc = ceilDiv(localCols, kFp8Block);
  const int64_t b0 = part.r0 / kFp8Block, bc0 = part.c0 / kFp8Block;
  const int64_t esize = s->dtype == DType::F32 ? 4 : 2;
  scales->resize(size_t(br * bc));
  for (int64_t r = 0; r < br; ++r)
    convertToFloat(s->dtype, s->data + ((b0 + r) * want[1] + bc0) * esize, bc,
                   scales->data() + r * bc);
  return true;
}

/// Converts checkpoint tensor `t` (shape already checked against `w`) into
/// `dst`, dequantizing F8_E4M3 with its "<name>_scale_inv" block scales.
bool convertTensor(Context &ctx, const Checkpoint &ckpt, const WeightSpec &w,
                   const Tensor &t, const Part &part, float *dst,
                   std::string *error) {
  const int64_t numel = t.numel();
  const int64_t rows = w.rank == 2 ? w.shape[0] : 1;
  const int64_t cols = w.rank == 2 ? w.shape[1] : w.shape[0];

  if (t.dtype != DType::F8E4M3) {
    auto body = [&](int64_t begin, int64_t end) {
      int64_t esize = t.dtype == DType::F32 ? 4 : 2;
      convertToFloat(t.dtype, t.data + begin * esize, end - begin,
                     dst + begin);
    };
    forRange(ctx, numel, numel, body);
    return true;
  }

  std::vector<float> scales;
  if (!readScales(ckpt, w, t, part, &scales, error))
    return false;
  auto body = [&](int64_t begin, int64_t end) {
    dequantE4M3(t.data, cols, scales.data(), begin, end, dst);
  };
  forRange(ctx, rows, numel, body);
  return true;
}

/// Quantizes a [rows, cols] float matrix into `q` block row by block row;
/// fill(r0, r1, buf) writes rows [r0, r1) of it to buf (row stride cols).
template <class Fill>
void quantizeOnLoad(Context &ctx, int64_t rows, int64_t cols, Fill &fill,
                    Context::Impl::Fp8Storage &q) {
  const int64_t blockRows = ceilDiv(rows, kFp8Block);
  const int64_t blockCols = ceilDiv(cols, kFp8Block);
  q.codes.resize(size_t(rows * cols));
  q.scales.resize(size_t(blockRows * blockCols));
  auto body = [&](int64_t begin, int64_t end) {
    std::vector<float> buf(size_t(std::min(rows, kFp8Block) * cols));
    for (int64_t b = begin; b < end; ++b) {
      const int64_t r0 = b * kFp8Block, r1 = std::min(rows, r0 + kFp8Block);
      fill(r0, r1, buf.data());
      quantizeE4M3BlockRow(buf.data(), cols, r1 - r0, cols,
                           q.codes.data() + r0 * cols,
                           q.scales.data() + b * blockCols);
    }
  };
  forRange(ctx, blockRows, rows * cols, body);
}

/// Keeps checkpoint tensor `t` of the FP8 weight `w` in `q`: F8_E4M3 as it
/// is, anything else quantized.
bool loadFp8(Context &ctx, const Checkpoint &ckpt, const WeightSpec &w,
             const Tensor &t, const Part &part, Context::Impl::Fp8Storage &q,
             std::string *error) {
  const int64_t rows = w.shape[0], cols = w.shape[1];
  if (t.dtype == DType::F8E4M3) {
    if (!readScales(ckpt, w, t, part, &q.scales, error))
      return false;
    q.codes.assign(t.data, t.data + rows * cols);
    return true;
  }
  auto fill = [&](int64_t r0, int64_t r1, float *buf) {
    int64_t esize = t.dtype == DType::F32 ? 4 : 2;
    convertToFloat(t.dtype, t.data + r0 * cols * esize, (r1 - r0) * cols, buf);
  };
  quantizeOnLoad(ctx, rows, cols, fill, q);
  return true;
}

void setFp8View(Context::Impl::Fp8Storage &q, const WeightSpec &w) {
  q.view = Fp8Weight{q.codes.data(), q.scales.data(), w.shape[0], w.shape[1]};
}

/// randomWeightRangeTo for elements [begin, end) of this rank's part: the
/// values of the same elements of the whole (global) tensor, so that a
/// partitioned model's random weights are the one-rank model's.
void randomPart(const WeightSpec &w, const Part &p, uint64_t seed,
                int64_t begin, int64_t end, float *dst) {
  if (!p.sliced) {
    randomWeightRangeTo(w, seed, begin, end, dst);
    return;
  }
  const int64_t cols = w.rank == 2 ? w.shape[1] : w.shape[0];
  for (int64_t i = begin; i < end;) {
    const int64_t r = i / cols, c = i % cols;
    const int64_t len = std::min(end - i, cols - c);
    const int64_t g = (p.r0 + r) * p.globalCols + p.c0 + c;
    randomWeightRangeTo(p.global, seed, g, g + len, dst + (i - begin));
    i += len;
  }
}

/// The part of checkpoint tensor `t` (shape `p.global`, checked) this rank
/// holds, as a tensor of w's shape: a view for whole rows, else a copy of
/// just its bytes into `scratch`.
bool sliceTensor(const Tensor &t, const WeightSpec &w, const Part &p,
                 std::vector<uint8_t> *scratch, Tensor *out,
                 std::string *error) {
  *out = t;
  if (!p.sliced)
    return true;
  // FP8 codes slice like any other element type (their scales: readScales).
  const int64_t esize =
      t.dtype == DType::F32 ? 4 : t.dtype == DType::F8E4M3 ? 1 : 2;
  const int64_t rows = w.rank == 2 ? w.shape[0] : 1;
  const int64_t cols = w.rank == 2 ? w.shape[1] : w.shape[0];
  out->shape.assign(w.shape, w.shape + w.rank);
  out->bytes = uint64_t(rows * cols * esize);
  if (cols == p.globalCols) {
    out->data = t.data + p.r0 * p.globalCols * esize;
    return true;
  }
  scratch->resize(size_t(rows * cols * esize));
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(scratch->data() + r * cols * esize,
                t.data + ((p.r0 + r) * p.globalCols + p.c0) * esize,
                size_t(cols * esize));
  out->data = scratch->data();
  return true;
}

/// Drops every weight (before loading, and on failure).
void clearWeights(Context::Impl &impl, int64_t numWeights) {
  impl.storage.assign(size_t(numWeights), {});
  impl.weights.assign(size_t(numWeights), nullptr);
  impl.bf16.assign(size_t(numWeights), {});
  impl.bf16Weights.assign(size_t(numWeights), nullptr);
  impl.fp8.assign(size_t(numWeights), {});
  impl.fp8Weights.assign(size_t(numWeights), nullptr);
}

} // namespace

bool Context::loadWeights(const char *path, std::string *error) {
  const ModelSpec &spec = this->spec();
  Impl &impl = this->impl();
  // Drop any previous weights first: a checkpoint can be most of memory. On
  // failure no weight is set.
  clearWeights(impl, spec.numWeights);

  std::unique_ptr<Checkpoint> ckpt = Checkpoint::open(path, error);
  if (!ckpt)
    return false;
  std::vector<uint8_t> scratch;
  for (int64_t i = 0; i < spec.numWeights; ++i) {
    const WeightSpec &w = spec.weights[i];
    if (!holdsWeight(i))
      continue; // another rank's (expert or pipeline stage)
    const Part part = partOf(*this, w);
    const Tensor *whole = ckpt->get(w.name, error);
    bool ok = whole != nullptr;
    if (ok && (whole->shape.size() != size_t(w.rank) ||
               !std::equal(whole->shape.begin(), whole->shape.end(),
                           part.global.shape))) {
      *error = whole->file->path() + ": tensor " + quote(w.name) +
               " has shape " + whole->shapeString() + "; the model expects " +
               shapeString(part.global.shape, w.rank);
      ok = false;
    }
    Tensor local;
    ok = ok && sliceTensor(*whole, w, part, &scratch, &local, error);
    const Tensor *t = &local;
    if (ok && keptInFp8(w)) {
      ok = loadFp8(*this, *ckpt, w, *t, part, impl.fp8[size_t(i)], error);
    } else if (ok && keptInBf16(w, t->dtype)) {
      // The bits as they are (the data may be unaligned: memcpy).
      std::vector<uint16_t> &dst = impl.bf16[size_t(i)];
      dst.resize(size_t(t->numel()));
      uint16_t *out = dst.data();
      auto body = [&](int64_t begin, int64_t end) {
        std::memcpy(out + begin, t->data + 2 * begin,
                    size_t(end - begin) * 2);
      };
      forRange(*this, t->numel(), t->numel(), body);
    } else if (ok) {
      impl.storage[size_t(i)].resize(size_t(t->numel()));
      ok = convertTensor(*this, *ckpt, w, *t, part,
                         impl.storage[size_t(i)].data(), error);
    }
    if (!ok) {
      clearWeights(impl, spec.numWeights);
      return false;
    }
  }
  for (int64_t i = 0; i < spec.numWeights; ++i) {
    if (!holdsWeight(i))
      continue;
    if (keptInFp8(spec.weights[i])) {
      setFp8View(impl.fp8[size_t(i)], spec.weights[i]);
      impl.fp8Weights[size_t(i)] = &impl.fp8[size_t(i)].view;
    } else if (!impl.bf16[size_t(i)].empty()) {
      impl.bf16Weights[size_t(i)] = impl.bf16[size_t(i)].data();
    } else {
      impl.weights[size_t(i)] = impl.storage[size_t(i)].data();
    }
  }
  return true;
}

void Context::randomWeights(uint64_t seed) {
  const ModelSpec &spec = this->spec();
  Impl &impl = this->impl();
  clearWeights(impl, spec.numWeights);
  for (int64_t i = 0; i < spec.numWeights; ++i) {
    const WeightSpec &w = spec.weights[i];
    if (!holdsWeight(i))
      continue;
    const Part part = partOf(*this, w);
    if (keptInFp8(w)) {
      // The same float values as a float32 weight of this name, quantized.
      const int64_t cols = w.shape[1];
      auto fill = [&](int64_t r0, int64_t r1, float *buf) {
        randomPart(w, part, seed, r0 * cols, r1 * cols, buf);
      };
      Impl::Fp8Storage &q = impl.fp8[size_t(i)];
      quantizeOnLoad(*this, w.shape[0], cols, fill, q);
      setFp8View(q, w);
      impl.fp8Weights[size_t(i)] = &q.view;
      continue;
    }
    int64_t numel = w.rank == 2 ? w.shape[0] * w.shape[1] : w.shape[0];
    if (keptInBf16(w, w.dtype)) {
      // The float values rounded to bf16, a slice at a time.
      std::vector<uint16_t> &dst = impl.bf16[size_t(i)];
      dst.resize(size_t(numel));
      uint16_t *out = dst.data();
      auto body = [&](int64_t begin, int64_t end) {
        constexpr int64_t kSlice = 4096;
        float buf[kSlice];
        for (int64_t b = begin; b < end; b += kSlice) {
          const int64_t e = std::min(end, b + kSlice);
          randomPart(w, part, seed, b, e, buf);
          for (int64_t j = b; j < e; ++j)
            out[j] = floatToBf16(buf[j - b]);
        }
      };
      forRange(*this, numel, numel, body);
      impl.bf16Weights[size_t(i)] = out;
      continue;
    }
    std::vector<float> &dst = impl.storage[size_t(i)];
    dst.resize(size_t(numel));
    float *out = dst.data();
    const bool bf16 = w.dtype == DType::BF16;
    auto body = [&](int64_t begin, int64_t end) {
      randomPart(w, part, seed, begin, end, out + begin);
      if (bf16)
        for (int64_t j = begin; j < end; ++j)
          out[j] = bf16ToFloat(floatToBf16(out[j]));
    };
    forRange(*this, numel, numel, body);
    impl.weights[size_t(i)] = out;
  }
}
