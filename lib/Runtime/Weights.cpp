//===- Weights.cpp - checkpoint and random weights into the Context -------===//
//
// Every weight the model declares is converted to a float32 copy in
// impl().storage (the kernels compute in float32); impl().weights[i] points
// at spec().weights[i]'s copy. The checkpoint's own dtype decides the
// conversion, so e.g. an F32 checkpoint of a BF16 model loads as well.
//
//===----------------------------------------------------------------------===//

#include "Convert.h"
#include "ContextImpl.h"
#include "ds/Runtime/Safetensors.h"

#include <algorithm>

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

/// Converts checkpoint tensor `t` (shape already checked against `w`) into
/// `dst`, dequantizing F8_E4M3 with its "<name>_scale_inv" block scales.
bool convertTensor(Context &ctx, const Checkpoint &ckpt, const WeightSpec &w,
                   const Tensor &t, float *dst, std::string *error) {
  const int64_t numel = t.numel();
  // A 1-D tensor is one row; its scales are then [ceil(n/128)].
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
             quote(w.name) + " " + t.shapeString() + " need " +
             shapeString(wantShape, w.rank);
    return false;
  }
  std::vector<float> scales(size_t(s->numel()));
  convertToFloat(s->dtype, s->data, s->numel(), scales.data());
  auto body = [&](int64_t begin, int64_t end) {
    dequantE4M3(t.data, cols, scales.data(), begin, end, dst);
  };
  forRange(ctx, rows, numel, body);
  return true;
}

} // namespace

bool Context::loadWeights(const char *path, std::string *error) {
  const ModelSpec &spec = this->spec();
  Impl &impl = this->impl();
  // Drop any previous weights first: a checkpoint can be most of memory. On
  // failure no weight is set.
  impl.storage.assign(size_t(spec.numWeights), {});
  impl.weights.assign(size_t(spec.numWeights), nullptr);

  std::unique_ptr<Checkpoint> ckpt = Checkpoint::open(path, error);
  if (!ckpt)
    return false;
  for (int64_t i = 0; i < spec.numWeights; ++i) {
    const WeightSpec &w = spec.weights[i];
    const Tensor *t = ckpt->get(w.name, error);
    bool ok = t != nullptr;
    if (ok && (t->shape.size() != size_t(w.rank) ||
               !std::equal(t->shape.begin(), t->shape.end(), w.shape))) {
      *error = t->file->path() + ": tensor " + quote(w.name) + " has shape " +
               t->shapeString() + "; the model expects " +
               shapeString(w.shape, w.rank);
      ok = false;
    }
    if (ok) {
      impl.storage[size_t(i)].resize(size_t(t->numel()));
      ok = convertTensor(*this, *ckpt, w, *t, impl.storage[size_t(i)].data(),
                         error);
    }
    if (!ok) {
      impl.storage.assign(size_t(spec.numWeights), {});
      return false;
    }
  }
  for (int64_t i = 0; i < spec.numWeights; ++i)
    impl.weights[size_t(i)] = impl.storage[size_t(i)].data();
  return true;
}

void Context::randomWeights(uint64_t seed) {
  const ModelSpec &spec = this->spec();
  Impl &impl = this->impl();
  impl.storage.assign(size_t(spec.numWeights), {});
  impl.weights.assign(size_t(spec.numWeights), nullptr);
  for (int64_t i = 0; i < spec.numWeights; ++i) {
    const WeightSpec &w = spec.weights[i];
    int64_t numel = w.rank == 2 ? w.shape[0] * w.shape[1] : w.shape[0];
    std::vector<float> &dst = impl.storage[size_t(i)];
    dst.resize(size_t(numel));
    float *out = dst.data();
    auto body = [&](int64_t begin, int64_t end) {
      randomWeightRange(w, seed, begin, end, out);
    };
    forRange(*this, numel, numel, body);
    impl.weights[size_t(i)] = out;
  }
}
