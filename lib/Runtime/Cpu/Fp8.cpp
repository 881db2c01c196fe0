//===- Fp8.cpp - GEMMs on weights by index (f32, bf16, FP8), fused GEMMs --===//
//
// bf16 weights (kept in bf16 where WeightSpec says) use cpu::gemm's tiles
// exactly: for each tile (row tile of x) x (column tile of C, i.e. rows
// [c0, c0 + cols) of W) the tile's rows of W are converted to thread-local
// float scratch (exact) and multiplied by the very cblas_sgemm call gemm
// makes for that tile on the float32 copy (same shape, same strides), so the
// results are bit for bit those of a float32 weight of the same values, for
// any thread count. Tiles go panel-major so that a thread's consecutive
// tiles of the same columns share the converted panel.
//
// FP8 weights (Fp8Weight: e4m3 codes, one float scale per 128x128 block) are
// never expanded to a whole float matrix. C = x W^T is computed in tiles of
// (row tile of x) x (128-row panel of W, one block row of scales); a tile
// decodes its panel into thread-local float scratch (exact: every e4m3 value
// and every code * scale product below is computed the same way each time)
// and multiplies with single-threaded BLAS:
//
//  ActQuant::None (weight-only FP8): panel = e4m3(code) * scale, then
//    C_tile = x_tile * panel^T, float32 accumulation over all of `in`.
//
//  ActQuant::Fp8 (DeepSeek-V3's recipe, as its fp8_gemm kernel): x is first
//    quantized per row per 128-column tile (the last one partial):
//      s_x = e4m3BlockScale(amax of the tile) = amax / 448 (1 if amax is 0),
//      x_q = e4m3(floatToE4M3(x / s_x)),
//    then for each 128-wide k-tile t, in order,
//      acc += (x_q[:, t] * codes[:, t]^T) * s_x[:, t] * s_w[panel, t]
//    (products of e4m3 values are exact in float32; each k-tile's dot is a
//    float32 GEMM, scaled, then added to a float32 accumulator starting at 0).
//
// Tiles depend on the shape only and each is one thread's work with fixed
// BLAS calls, so results do not depend on --threads. Float weights go
// through cpu::gemm (today's linear), FP8 tiles are rowTile(n) x 128.
// Converted panels (bf16 and FP8 alike) live in per-thread scratch that
// keeps its largest size: up to a column tile (<= 256) or 128 rows of the
// widest weight, twice (gatedUp).
//
//===----------------------------------------------------------------------===//

#include "Convert.h"
#include "CpuCommon.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

namespace dsrt {
namespace cpu {

namespace {

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// e4m3ToFloat of every code.
struct E4M3Table {
  float v[256];
  E4M3Table() {
    for (int c = 0; c < 256; ++c)
      v[c] = e4m3ToFloat(uint8_t(c));
  }
};
const float *e4m3Table() {
  static const E4M3Table table;
  return table.v;
}

/// Activations quantized for ActQuant::Fp8: the e4m3 values (decoded, exact
/// in float) xq [n, in] and the scales sx [n, ceil(in/128)].
struct QuantAct {
  int64_t in = 0, kTiles = 0;
  std::vector<float> xq, sx;
};

void quantizeAct(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t in, QuantAct &qa) {
  const float *table = e4m3Table();
  qa.in = in;
  qa.kTiles = ceilDiv(in, kFp8Block);
  qa.xq.resize(size_t(n * in));
  qa.sx.resize(size_t(n * qa.kTiles));
  pool(ctx).parallelFor(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const float *xi = x + i * ldx;
          float *qi = qa.xq.data() + i * in;
          for (int64_t t = 0; t < qa.kTiles; ++t) {
            const int64_t c0 = t * kFp8Block,
                          c1 = std::min(in, c0 + kFp8Block);
            float amax = 0.0f;
            for (int64_t c = c0; c < c1; ++c) {
              float a = std::fabs(xi[c]);
              amax = a > amax ? a : amax;
            }
            const float s = e4m3BlockScale(amax);
            qa.sx[size_t(i * qa.kTiles + t)] = s;
            for (int64_t c = c0; c < c1; ++c)
              qi[c] = table[floatToE4M3(xi[c] / s)];
          }
        }
      },
      rowsPerChunk(4 * in));
}

/// One thread's decoded panel of an FP8 weight, reused by the next tile of
/// the same kernel call (`call`, from newCall()) when it needs the same one;
/// never across calls, as weights may be reloaded in between.
struct Panel {
  std::vector<float> data;
  uint64_t call = 0;
  const Fp8Weight *w = nullptr;
  int64_t index = -1;
  bool scaled = false;
};

uint64_t newCall() {
  static std::atomic<uint64_t> calls{0};
  return ++calls;
}

/// Rows [p*128, p*128 + rows) of w decoded into panel.data [rows, cols]:
/// code * block scale when `scaled`, else the bare e4m3 values.
const float *decodePanel(Panel &panel, uint64_t call, const Fp8Weight &w,
                         int64_t p, bool scaled) {
  if (panel.call == call && panel.w == &w && panel.index == p &&
      panel.scaled == scaled)
    return panel.data.data();
  const float *table = e4m3Table();
  const int64_t cols = w.cols, r0 = p * kFp8Block;
  const int64_t rows = std::min(kFp8Block, w.rows - r0);
  const int64_t blockCols = ceilDiv(cols, kFp8Block);
  panel.data.resize(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t *in = w.codes + (r0 + r) * cols;
    float *out = panel.data.data() + r * cols;
    if (scaled) {
      const float *scales = w.scaleInv + p * blockCols;
      for (int64_t c = 0; c < cols; ++c)
        out[c] = table[in[c]] * scales[c / kFp8Block];
    } else {
      for (int64_t c = 0; c < cols; ++c)
        out[c] = table[in[c]];
    }
  }
  panel.call = call;
  panel.w = &w;
  panel.index = p;
  panel.scaled = scaled;
  return panel.data.data();
}

// Scratch per thread; [0] and [1] for the two weights of gatedUp.
thread_local Panel tlsPanel[2];
thread_local std::vector<float> tlsPartial;

/// One thread's float copy of rows [c0, c0 + cols) of a bf16 weight
/// [.., in], reused (like Panel) by the next tile of the same call.
struct Bf16Panel {
  std::vector<float> data;
  uint64_t call = 0;
  const uint16_t *w = nullptr;
  int64_t c0 = -1;
};

thread_local Bf16Panel tlsBf16Panel[2];

/// Rows [c0, c0 + cols) of the bf16 matrix w [.., in] as float32 [cols, in].
const float *decodeBf16Panel(Bf16Panel &panel, uint64_t call,
                             const uint16_t *w, int64_t in, int64_t c0,
                             int64_t cols) {
  if (panel.call == call && panel.w == w && panel.c0 == c0)
    return panel.data.data();
  const int64_t count = cols * in;
  panel.data.resize(size_t(count));
  const uint16_t *src = w + c0 * in;
  float *dst = panel.data.data();
  for (int64_t i = 0; i < count; ++i)
    dst[i] = bf16ToFloat(src[i]);
  panel.call = call;
  panel.w = w;
  panel.c0 = c0;
  return dst;
}

/// The float32 rows [c0, c0 + cols) of a non-FP8 weight [.., in]: the
/// float32 copy itself, or the bf16 rows converted into `panel`.
const float *floatRows(const WeightRef &w, int64_t in, int64_t c0,
                       int64_t cols, Bf16Panel &panel, uint64_t call) {
  return w.f ? w.f + c0 * in : decodeBf16Panel(panel, call, w.h, in, c0, cols);
}

/// C tile [rows, cols] (ldc) = rows [r0, r0 + rows) of x times rows
/// [c0, c0 + cols) of W^T for a float32 or bf16 weight W [.., in]: the
/// cblas_sgemm call cpu::gemm makes for this tile.
void floatTile(const WeightRef &w, int64_t in, const float *x, int64_t ldx,
               int64_t r0, int64_t rows, int64_t c0, int64_t cols,
               Bf16Panel &panel, uint64_t call, float *c, int64_t ldc) {
  const float *b = floatRows(w, in, c0, cols, panel, call);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(cols),
              int(in), 1.0f, x + r0 * ldx, int(ldx), b, int(in), 0.0f, c,
              int(ldc));
}

/// C tile [rows, 128-row panel p of w] (ldc) = rows [r0, r0 + rows) of x
/// times the panel^T, as the file comment says.
void fp8Tile(const Fp8Weight &w, const float *x, int64_t ldx,
             const QuantAct *qa, int64_t r0, int64_t rows, int64_t p,
             Panel &panel, uint64_t call, float *c, int64_t ldc) {
  const int64_t in = w.cols;
  const int64_t pw = std::min(kFp8Block, w.rows - p * kFp8Block);
  if (!qa) {
    const float *b = decodePanel(panel, call, w, p, true);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(pw),
                int(in), 1.0f, x + r0 * ldx, int(ldx), b, int(in), 0.0f, c,
                int(ldc));
    return;
  }
  const float *b = decodePanel(panel, call, w, p, false);
  const int64_t kTiles = qa->kTiles;
  const float *sw = w.scaleInv + p * ceilDiv(in, kFp8Block);
  std::vector<float> &part = tlsPartial;
  part.resize(size_t(rows * pw));
  for (int64_t i = 0; i < rows; ++i)
    std::fill_n(c + i * ldc, pw, 0.0f);
  for (int64_t t = 0; t < kTiles; ++t) {
    const int64_t k0 = t * kFp8Block, kw = std::min(kFp8Block, in - k0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(pw),
                int(kw), 1.0f, qa->xq.data() + r0 * in + k0, int(in), b + k0,
                int(in), 0.0f, part.data(), int(pw));
    const float swt = sw[t];
    for (int64_t i = 0; i < rows; ++i) {
      const float sxt = qa->sx[size_t((r0 + i) * kTiles + t)];
      const float *pi = part.data() + i * pw;
      float *ci = c + i * ldc;
      for (int64_t j = 0; j < pw; ++j)
        ci[j] += pi[j] * sxt * swt;
    }
  }
}

/// The tiles of C [m, n] for a weight kind: float32 and bf16 -> gemm's
/// tiles, FP8 -> rowTile(m) x 128. Tiles of converted weights (bf16, FP8) go
/// panel-major so that a thread's consecutive tiles share a decoded panel
/// (the order tiles run in does not change any result).
struct TilePlan {
  int64_t m, n, tm, tn, rowTiles, colTiles, minChunk;
  bool panelMajor;

  TilePlan(bool fp8, bool convert, int64_t m, int64_t n, int64_t k)
      : m(m), n(n), tm(gemmRowTile(m)), tn(fp8 ? kFp8Block : gemmColTile(m, n)),
        rowTiles(ceilDiv(m, tm)), colTiles(ceilDiv(n, tn)),
        minChunk(gemmMinChunk(tm * std::min(tn, n) * k)),
        panelMajor(fp8 || convert) {}

  int64_t count() const { return rowTiles * colTiles; }

  /// fn(r0, rows, c0, cols) over every tile, spread over the pool.
  template <class F> void run(Context &ctx, F &&fn) const {
    pool(ctx).parallelFor(
        count(),
        [&](int64_t begin, int64_t end) {
          for (int64_t t = begin; t < end; ++t) {
            const int64_t rt = panelMajor ? t % rowTiles : t / colTiles;
            const int64_t ct = panelMajor ? t / rowTiles : t % colTiles;
            const int64_t r0 = rt * tm, c0 = ct * tn;
            fn(r0, std::min(tm, m - r0), c0, std::min(tn, n - c0));
          }
        },
        minChunk);
  }
};

void linearFp8(Context &ctx, const float *x, int64_t ldx, int64_t n,
               int64_t in, const Fp8Weight &w, int64_t out, float *y,
               int64_t ldy, const QuantAct *qa) {
  TilePlan plan(true, true, n, out, in);
  const uint64_t call = newCall();
  plan.run(ctx, [&](int64_t r0, int64_t rows, int64_t c0, int64_t) {
    fp8Tile(w, x, ldx, qa, r0, rows, c0 / kFp8Block, tlsPanel[0], call,
            y + r0 * ldy + c0, ldy);
  });
}

/// linear on a bf16 weight: gemm's tiles and calls on converted panels.
void linearBf16(Context &ctx, const float *x, int64_t ldx, int64_t n,
                int64_t in, const WeightRef &w, int64_t out, float *y,
                int64_t ldy) {
  TilePlan plan(false, true, n, out, in);
  const uint64_t call = newCall();
  plan.run(ctx, [&](int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
    floatTile(w, in, x, ldx, r0, rows, c0, cols, tlsBf16Panel[0], call,
              y + r0 * ldy + c0, ldy);
  });
}

bool zeroSized(int64_t n, int64_t in, int64_t out, float *y, int64_t ldy) {
  if (n <= 0 || out <= 0)
    return true;
  if (in <= 0) { // an empty sum
    for (int64_t i = 0; i < n; ++i)
      std::fill_n(y + i * ldy, out, 0.0f);
    return true;
  }
  return false;
}

} // namespace

WeightRef weightRef(Context &ctx, int64_t index, const char *kernel,
                    int64_t out, int64_t in) {
  const ModelSpec &s = ctx.spec();
  if (index < 0 || index >= s.numWeights)
    fatal(kernel, "weight index out of range", index);
  const WeightSpec &ws = s.weights[index];
  if (ws.rank != 2 || ws.shape[0] != out || ws.shape[1] != in)
    fatal(kernel, "weight shape is not [out, in]; weight", index);
  WeightRef r;
  r.f = ctx.weight(index);
  r.h = r.f ? nullptr : ctx.bf16Weight(index);
  r.q = r.f || r.h ? nullptr : ctx.fp8Weight(index);
  if (!r.f && !r.h && !r.q)
    fatal(kernel, "weight not loaded", index);
  return r;
}

void linearRef(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
               const WeightRef &w, int64_t out, float *y, int64_t ldy,
               ActQuant act, GemmPath path) {
  if (w.f) { // as linear
    gemm(ctx, true, n, out, in, 1.0f, x, ldx, w.f, in, 0.0f, y, ldy, path);
    return;
  }
  if (zeroSized(n, in, out, y, ldy))
    return;
  if (w.h) { // as gemm (ActQuant is for FP8 weights only)
    if (useGemv(path, n))
      gemvBf16(ctx, n, out, in, 1.0f, x, ldx, w.h, in, 0.0f, y, ldy);
    else
      linearBf16(ctx, x, ldx, n, in, w, out, y, ldy);
    return;
  }
  if (act == ActQuant::Fp8) {
    QuantAct qa;
    quantizeAct(ctx, x, ldx, n, in, qa);
    linearFp8(ctx, x, ldx, n, in, *w.q, out, y, ldy, &qa);
  } else {
    linearFp8(ctx, x, ldx, n, in, *w.q, out, y, ldy, nullptr);
  }
}

void linearW(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
             int64_t weight, int64_t out, float *y, int64_t ldy,
             ActQuant act) {
  WeightRef w = weightRef(ctx, weight, "linearW", out, in);
  linearRef(ctx, x, ldx, n, in, w, out, y, ldy, act);
}

void logitsW(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
             int64_t weight, int64_t out, float *y, int64_t ldy, ActQuant act) {
  const int64_t from = ctx.logitsRowsFrom(n);
  // The rows read, computed as the whole n rows would compute them.
  const WeightRef w = weightRef(ctx, weight, "logitsW", out, in);
  linearRef(ctx, x + from * ldx, ldx, n - from, in, w, out, y + from * ldy, ldy,
            act, useGemv(GemmPath::Auto, n) ? GemmPath::Auto : GemmPath::Tiled);
}

void linearPairW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t in, int64_t wa, int64_t outA, float *ya, int64_t ldya,
                 int64_t wb, int64_t outB, float *yb, int64_t ldyb,
                 ActQuant act) {
  linearW(ctx, x, ldx, n, in, wa, outA, ya, ldya, act);
  linearW(ctx, x, ldx, n, in, wb, outB, yb, ldyb, act);
}

void linearAddW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                int64_t in, int64_t weight, int64_t out, float *y, int64_t ldy,
                ActQuant act) {
  // The unfused pair, literally: BLAS with beta = 1 would add the product
  // into y in K blocks, a different rounding.
  if (n <= 0 || out <= 0)
    return;
  std::vector<float> t(size_t(n * out));
  linearW(ctx, x, ldx, n, in, weight, out, t.data(), out, act);
  add(ctx, y, ldy, t.data(), out, n, out, y, ldy);
}

void linearNormW(Context &ctx, const float *x, int64_t ldx, int64_t n,
                 int64_t in, int64_t weight, int64_t out, float *y, int64_t ldy,
                 const AddNorm &norm, ActQuant act) {
  // The unfused pair, bit for bit.
  linearW(ctx, x, ldx, n, in, weight, out, y, ldy, act);
  addRmsNorm(ctx, norm.residual, norm.ldr, y, ldy, n, out, norm.weight,
             norm.eps, norm.sum, norm.lds, norm.normed, norm.ldn);
}

void gatedUp(Context &ctx, const float *x, int64_t ldx, int64_t n, int64_t in,
             int64_t gate, int64_t up, int64_t inter, float *y, int64_t ldy,
             ActQuant act) {
  const WeightRef g = weightRef(ctx, gate, "gatedUp", inter, in);
  const WeightRef u = weightRef(ctx, up, "gatedUp", inter, in);
  auto swigluRow = [](const float *gi, const float *ui, int64_t d, float *yi) {
    for (int64_t j = 0; j < d; ++j) // as swiglu
      yi[j] = gi[j] / (1.0f + std::exp(-gi[j])) * ui[j];
  };
  if (n <= 0 || inter <= 0)
    return;

  if (in <= 0 || bool(g.q) != bool(u.q) ||
      (!g.q && useGemv(GemmPath::Auto, n))) {
    // Mixed storage, an empty sum or GEMV-sized float32/bf16 GEMMs: the
    // unfused sequence literally.
    std::vector<float> gs(size_t(n * inter)), us(size_t(n * inter));
    linearRef(ctx, x, ldx, n, in, g, inter, gs.data(), inter, act);
    linearRef(ctx, x, ldx, n, in, u, inter, us.data(), inter, act);
    swiglu(ctx, gs.data(), inter, us.data(), inter, n, inter, y, ldy);
    return;
  }

  // Both FP8, or both float32/bf16 (in any mix: both use gemm's tiles):
  // one tile plan, so each tile of the gate and up GEMMs is computed exactly
  // as linearW computes it; SwiGLU per tile.
  const bool fp8 = g.q != nullptr;
  QuantAct qa;
  const QuantAct *qap = nullptr;
  if (fp8 && act == ActQuant::Fp8) {
    quantizeAct(ctx, x, ldx, n, in, qa); // shared by both GEMMs
    qap = &qa;
  }
  TilePlan plan(fp8, fp8 || g.h || u.h, n, inter, in);
  const uint64_t call = newCall();
  plan.run(ctx, [&](int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
    thread_local std::vector<float> gt, ut;
    gt.resize(size_t(rows * cols));
    ut.resize(size_t(rows * cols));
    if (fp8) {
      fp8Tile(*g.q, x, ldx, qap, r0, rows, c0 / kFp8Block, tlsPanel[0], call,
              gt.data(), cols);
      fp8Tile(*u.q, x, ldx, qap, r0, rows, c0 / kFp8Block, tlsPanel[1], call,
              ut.data(), cols);
    } else { // gemm's call for this tile
      floatTile(g, in, x, ldx, r0, rows, c0, cols, tlsBf16Panel[0], call,
                gt.data(), cols);
      floatTile(u, in, x, ldx, r0, rows, c0, cols, tlsBf16Panel[1], call,
                ut.data(), cols);
    }
    for (int64_t i = 0; i < rows; ++i)
      swigluRow(gt.data() + i * cols, ut.data() + i * cols, cols,
                y + (r0 + i) * ldy + c0);
  });
}

void moeGate(Context &ctx, const float *x, int64_t ldx, int64_t n,
             int64_t hidden, int64_t weight, const float *bias,
             const MoERouting &routing, int32_t *idx, float *weights) {
  const int64_t experts = routing.experts;
  const WeightRef w = weightRef(ctx, weight, "moeGate", experts, hidden);
  if (n <= 0)
    return;
  // The router stays in float32: an FP8 router weight is dequantized, its
  // activations are not quantized.
  std::vector<float> logits(size_t(n * experts));
  linearRef(ctx, x, ldx, n, hidden, w, experts, logits.data(), experts,
            ActQuant::None);
  moeRoute(ctx, logits.data(), experts, n, bias, routing, idx, weights);
}

} // namespace cpu
} // namespace dsrt
