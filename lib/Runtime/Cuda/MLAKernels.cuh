//===- MLAKernels.cuh - multi-head latent attention kernels -----*- CUDA -*-===//
//
// The kernels of MLA.cu (which launches them; see there for the scheme), in
// a header so that test/Unit/CudaEmuTest.cpp runs them on the CPU too.
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_CUDA_MLAKERNELS_CUH
#define DS_LIB_RUNTIME_CUDA_MLAKERNELS_CUH

#include "CacheWriteKernel.cuh"
#include "GemvKernels.cuh"

namespace dsrt {
namespace cuda {
namespace mla {

/// One online-softmax step of a score row: `count` new scores (-inf for
/// masked ones) become probabilities relative to the updated running max
/// `m`, `l` (the running sum) is rescaled and extended; returns the factor
/// by which the row's earlier accumulations must be scaled.
__device__ inline float onlineSoftmaxStep(float *s, int count, float &m,
                                          float &l) {
  float mx = m;
  for (int c = 0; c < count; ++c)
    mx = fmaxf(mx, s[c]);
  const float corr = mx == -INFINITY ? 1.0f : expf(m - mx);
  float sum = 0.0f;
  for (int c = 0; c < count; ++c) {
    const float p = mx == -INFINITY ? 0.0f : expf(s[c] - mx);
    s[c] = p;
    sum += p;
  }
  l = l * corr + sum;
  m = mx;
  return corr;
}

/// One row's online-softmax state after a tile whose maximum took m from
/// mOld to mNew and whose (rounded) probabilities sum to `sum`: the new m
/// and l, and the factor that rescales the row's earlier output.
__device__ inline void softmaxRowUpdate(float *mRow, float *lRow, float *cRow,
                                        int64_t r, float mOld, float mNew,
                                        float sum) {
  const float corr = mNew == -INFINITY ? 1.0f : expf(mOld - mNew);
  mRow[r] = mNew;
  lRow[r] = lRow[r] * corr + sum;
  cRow[r] = corr;
}

constexpr int kQT = 16, kKT = 16; // prefill: queries, keys per tile
constexpr int kVMax = 16;         // prefill: v dims per thread (vdim <= 256)

/// mlaPrefillKernel's dynamic shared memory.
inline size_t prefillSharedBytes(int64_t qHead, int64_t vdim) {
  return sizeof(float) * size_t(kQT * (qHead + 1) + kKT * (qHead + 1) +
                                kKT * (vdim + 1) + kQT * kKT + 3 * kQT);
}

__global__ void __launch_bounds__(256)
    mlaPrefillKernel(const float *q, int64_t ldq, const float *kv, int64_t ldkv,
                     const float *krope, int64_t ldk, int64_t n, int64_t nope,
                     int64_t rope, int64_t vdim, int64_t qHead, int64_t kvHead,
                     float scale, float *out, int64_t ldo) {
  pdlEnter();
  DS_DYNAMIC_SHARED(float, smem);
  const int64_t qStride = qHead + 1; // +1: no bank conflicts across rows
  const int64_t vStride = vdim + 1;
  float *qs = smem;                      // [kQT][qStride]
  float *ks = qs + kQT * qStride;        // [kKT][qStride]
  float *vs = ks + kKT * qStride;        // [kKT][vStride]
  float *sc = vs + kKT * vStride;        // [kQT][kKT]
  float *corr = sc + kQT * kKT;          // [kQT]
  float *lsum = corr + kQT;              // [kQT]
  float *mmax = lsum + kQT;              // [kQT]
  const int tid = threadIdx.x;
  const int64_t h = blockIdx.y;
  const int64_t i0 = int64_t(blockIdx.x) * kQT;
  const int64_t rows = imin(kQT, n - i0);

  for (int64_t e = tid; e < kQT * qHead; e += blockDim.x) {
    const int64_t r = e / qHead, d = e % qHead;
    qs[r * qStride + d] = r < rows ? q[(i0 + r) * ldq + h * qHead + d] : 0.0f;
  }
  if (tid < kQT) {
    lsum[tid] = 0.0f;
    mmax[tid] = -INFINITY;
  }
  const int qi = tid / 16, sub = tid % 16; // accumulate: query, dim lane
  float acc[kVMax];
#pragma unroll
  for (int r = 0; r < kVMax; ++r)
    acc[r] = 0.0f;

  const int64_t keys = i0 + rows; // the last query sees keys [0, keys)
  for (int64_t j0 = 0; j0 < keys; j0 += kKT) {
    __syncthreads();
    for (int64_t e = tid; e < kKT * qHead; e += blockDim.x) {
      const int64_t r = e / qHead, d = e % qHead, j = j0 + r;
      float v = 0.0f;
      if (j < keys)
        v = d < nope ? kv[j * ldkv + h * kvHead + d] : krope[j * ldk + d - nope];
      ks[r * qStride + d] = v;
    }
    for (int64_t e = tid; e < kKT * vdim; e += blockDim.x) {
      const int64_t r = e / vdim, d = e % vdim, j = j0 + r;
      vs[r * vStride + d] = j < keys ? kv[j * ldkv + h * kvHead + nope + d] : 0.0f;
    }
    __syncthreads();
    { // one score per thread: (query tid / 16, key tid % 16)
      const int r = tid / kKT, c = tid % kKT;
      const int64_t i = i0 + r, j = j0 + c;
      float s = 0.0f;
      for (int64_t d = 0; d < qHead; ++d)
        s += qs[r * qStride + d] * ks[c * qStride + d];
      sc[r * kKT + c] = (r < rows && j <= i) ? s * scale : -INFINITY;
    }
    __syncthreads();
    if (tid < kQT)
      corr[tid] = onlineSoftmaxStep(sc + tid * kKT, kKT, mmax[tid], lsum[tid]);
    __syncthreads();
    const float cr = corr[qi];
#pragma unroll
    for (int r = 0; r < kVMax; ++r) {
      const int64_t d = sub + 16 * r;
      if (d < vdim) {
        float a = acc[r] * cr;
        for (int c = 0; c < kKT; ++c)
          a += sc[qi * kKT + c] * vs[c * vStride + d];
        acc[r] = a;
      }
    }
  }
  __syncthreads();
  if (qi < rows) {
    const float inv = 1.0f / lsum[qi];
#pragma unroll
    for (int r = 0; r < kVMax; ++r) {
      const int64_t d = sub + 16 * r;
      if (d < vdim)
        out[(i0 + qi) * ldo + h * vdim + d] = acc[r] * inv;
    }
  }
}

/// Tensor-core prefill (bf16 mode): a block takes 64 queries of one head
/// (4 warps of 16 queries) and streams 64 keys at a time. q, k and v are
/// rounded to bf16 in shared memory, as the bf16 GEMMs round their inputs;
/// scores, softmax and the output accumulate in float32.
constexpr int kTcQ = 64, kTcK = 64, kTcWarps = 4;
/// K/V tile loads: rows a warp has in flight, 16-byte chunks per lane of
/// each (qk + v head dims up to 384; wider ones load element-wise).
constexpr int kTcRowsInFlight = 2, kTcChunks = 3;
static_assert(kTcK % (kTcWarps * kTcRowsInFlight) == 0, "whole row groups");

/// The tensor-core prefill's shared memory, from the head dims alone (the
/// launch and the kernel agree on it). Head dims are rounded up to 16 (zero
/// padding); row strides add 8 bf16 / 4 floats (16 bytes), so WMMA pointers
/// stay 256-bit aligned and rows start on different banks.
struct PrefillTcLayout {
  int64_t qPad, vPad;                 ///< qk and v head dims, multiples of 16
  int64_t ldQK, ldV, ldS, ldP, ldO;   ///< row strides, in elements
  int64_t offK, offV, offS, offP, offO, offStats, bytes; ///< byte offsets

  __host__ __device__ static int64_t align(int64_t b) {
    return (b + 127) / 128 * 128;
  }
  __host__ __device__ PrefillTcLayout(int64_t qHead, int64_t vdim) {
    qPad = (qHead + 15) / 16 * 16;
    vPad = (vdim + 15) / 16 * 16;
    ldQK = qPad + 8, ldV = vPad + 8, ldS = kTcK + 4, ldP = kTcK + 8;
    ldO = vPad + 4;
    offK = align(kTcQ * ldQK * 2);              // after Q [kTcQ][ldQK] bf16
    offV = offK + align(kTcK * ldQK * 2);       // K [kTcK][ldQK] bf16
    offS = offV + align(kTcK * ldV * 2);        // V [kTcK][ldV] bf16
    offP = offS + align(kTcQ * ldS * 4);        // S [kTcQ][ldS] float
    offO = offP + align(kTcQ * ldP * 2);        // P [kTcQ][ldP] bf16
    offStats = offO + align(kTcQ * ldO * 4);    // O [kTcQ][ldO] float
    bytes = offStats + 3 * kTcQ * 4;            // m, l, correction per query
  }
};

/// Whether loadPrefillTile may load 16-byte chunks: every part of a K/V row
/// starts 16-byte aligned, and a row's chunks fit a warp's kTcChunks each.
__device__ inline bool prefillTileVec(const float *kv, int64_t ldkv,
                                      const float *krope, int64_t ldk,
                                      int64_t nope, int64_t qHead, int64_t vdim,
                                      int64_t kvHead, int64_t qPad,
                                      int64_t vPad) {
  return nope % 4 == 0 && qHead % 4 == 0 && vdim % 4 == 0 && kvHead % 4 == 0 &&
         ldkv % 4 == 0 && ldk % 4 == 0 &&
         reinterpret_cast<uintptr_t>(kv) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(krope) % 16 == 0 &&
         qPad / 4 + vPad / 4 <= 32 * kTcChunks;
}

/// Keys [j0, j0 + kTcK) of one head into shared memory as bf16 (the whole
/// block calls it): K rows (nope from kvHead0, rope from krope, zeros to
/// qPad) into ks [kTcK][ldQK], V rows (zeros to vPad) into vs [kTcK][ldV];
/// rows at or past `keys` are zeros. vec (prefillTileVec): rows as 16-byte
/// chunks, chunk c of a row being K's for c < qPad / 4 and V's above, a
/// warp's rows kTcRowsInFlight at a time with every load issued before any
/// store; else element by element.
__device__ inline void loadPrefillTile(const float *kvHead0, int64_t ldkv,
                                       const float *krope, int64_t ldk,
                                       int64_t j0, int64_t keys, int64_t nope,
                                       int64_t qHead, int64_t vdim,
                                       int64_t qPad, int64_t vPad, bool vec,
                                       __nv_bfloat16 *ks, int64_t ldQK,
                                       __nv_bfloat16 *vs, int64_t ldV) {
  using bf16 = __nv_bfloat16;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int nc = int(nope / 4), hc = int(qHead / 4), qc = int(qPad / 4);
  const int dc = int(vdim / 4), vc = int(vPad / 4);
  if (vec) {
    for (int r0 = warp; r0 < kTcK; r0 += kTcWarps * kTcRowsInFlight) {
      float4 v[kTcRowsInFlight][kTcChunks];
#pragma unroll
      for (int i = 0; i < kTcRowsInFlight; ++i) {
        const int64_t j = j0 + r0 + i * kTcWarps;
        const float *kvRow = kvHead0 + j * ldkv, *kr = krope + j * ldk;
#pragma unroll
        for (int c = 0; c < kTcChunks; ++c) {
          const int ch = lane + 32 * c;
          const float *src = nullptr;
          if (j < keys) {
            if (ch < nc)
              src = kvRow + 4 * ch;
            else if (ch < hc)
              src = kr + 4 * (ch - nc);
            else if (ch >= qc && ch - qc < dc)
              src = kvRow + nope + 4 * (ch - qc);
          }
          v[i][c] = src ? *reinterpret_cast<const float4 *>(src)
                        : float4{0.0f, 0.0f, 0.0f, 0.0f};
        }
      }
#pragma unroll
      for (int i = 0; i < kTcRowsInFlight; ++i) {
        const int r = r0 + i * kTcWarps;
#pragma unroll
        for (int c = 0; c < kTcChunks; ++c) {
          const int ch = lane + 32 * c;
          bf16 *dst = ch < qc        ? ks + r * ldQK + 4 * ch
                      : ch < qc + vc ? vs + r * ldV + 4 * (ch - qc)
                                     : nullptr;
          if (dst) {
            dst[0] = __float2bfloat16(v[i][c].x);
            dst[1] = __float2bfloat16(v[i][c].y);
            dst[2] = __float2bfloat16(v[i][c].z);
            dst[3] = __float2bfloat16(v[i][c].w);
          }
        }
      }
    }
    return;
  }
  for (int64_t r = warp; r < kTcK; r += kTcWarps) {
    const int64_t j = j0 + r;
    const bool live = j < keys;
    const float *kvRow = kvHead0 + j * ldkv, *kr = krope + j * ldk;
    for (int64_t d = lane; d < qPad; d += 32) {
      float v = 0.0f;
      if (live && d < qHead)
        v = d < nope ? kvRow[d] : kr[d - nope];
      ks[r * ldQK + d] = __float2bfloat16(v);
    }
    for (int64_t d = lane; d < vPad; d += 32)
      vs[r * ldV + d] =
          __float2bfloat16(live && d < vdim ? kvRow[nope + d] : 0.0f);
  }
}

/// Causal attention of the naive (prefill) form on tensor cores; the same
/// arguments and result as mlaPrefillKernel. Each warp owns 16 query rows
/// end to end (scores, their online softmax, the output rows), so only the
/// K/V tile loads need the whole block.
__global__ void __launch_bounds__(kTcWarps * 32)
    mlaPrefillTcKernel(const float *q, int64_t ldq, const float *kv,
                       int64_t ldkv, const float *krope, int64_t ldk, int64_t n,
                       int64_t nope, int64_t vdim, int64_t qHead,
                       int64_t kvHead, float scale, float *out, int64_t ldo) {
  pdlEnter();
  using namespace nvcuda;
  using bf16 = __nv_bfloat16;
  DS_DYNAMIC_SHARED(unsigned char, smemTc);
  const PrefillTcLayout L(qHead, vdim);
  bf16 *qs = reinterpret_cast<bf16 *>(smemTc);
  bf16 *ks = reinterpret_cast<bf16 *>(smemTc + L.offK);
  bf16 *vs = reinterpret_cast<bf16 *>(smemTc + L.offV);
  float *ss = reinterpret_cast<float *>(smemTc + L.offS);
  bf16 *ps = reinterpret_cast<bf16 *>(smemTc + L.offP);
  float *os = reinterpret_cast<float *>(smemTc + L.offO);
  float *mRow = reinterpret_cast<float *>(smemTc + L.offStats);
  float *lRow = mRow + kTcQ, *cRow = lRow + kTcQ;
  const int tid = threadIdx.x, lane = tid % 32, w0 = tid / 32 * 16;
  const int64_t h = blockIdx.y;
  // Later query tiles see more keys: they are scheduled first.
  const int64_t i0 = int64_t(gridDim.x - 1 - blockIdx.x) * kTcQ;
  const int64_t rows = imin(kTcQ, n - i0);
  const int64_t keys = i0 + rows; // the last query sees keys [0, keys)

  // Rows a warp at a time, lanes along the row: coalesced, and no division
  // per element (a 64-bit one costs tens of instructions).
  const int warp = tid / 32;
  for (int64_t r = warp; r < kTcQ; r += kTcWarps) {
    const float *src = q + (i0 + r) * ldq + h * qHead;
    for (int64_t d = lane; d < L.qPad; d += 32)
      qs[r * L.ldQK + d] =
          __float2bfloat16(r < rows && d < qHead ? src[d] : 0.0f);
    for (int64_t d = lane; d < L.vPad; d += 32)
      os[r * L.ldO + d] = 0.0f;
  }
  if (tid < kTcQ) {
    mRow[tid] = -INFINITY;
    lRow[tid] = 0.0f;
  }

  const float *kvHead0 = kv + h * kvHead; // this head's K/V columns
  const bool vec = prefillTileVec(kv, ldkv, krope, ldk, nope, qHead, vdim,
                                  kvHead, L.qPad, L.vPad);
  for (int64_t j0 = 0; j0 < keys; j0 += kTcK) {
    __syncthreads(); // every warp is done with the previous K and V
    loadPrefillTile(kvHead0, ldkv, krope, ldk, j0, keys, nope, qHead, vdim,
                    L.qPad, L.vPad, vec, ks, L.ldQK, vs, L.ldV);
    __syncthreads();
    if (w0 >= rows)
      continue; // this warp's queries are all padding

    // S = Q K^T for the warp's 16 rows.
    for (int c = 0; c < kTcK / 16; ++c) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int64_t k = 0; k < L.qPad; k += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
        wmma::load_matrix_sync(a, qs + w0 * L.ldQK + k, unsigned(L.ldQK));
        wmma::load_matrix_sync(b, ks + c * 16 * L.ldQK + k, unsigned(L.ldQK));
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(ss + w0 * L.ldS + c * 16, acc, unsigned(L.ldS),
                              wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax, one row at a time, two keys per lane; P in bf16 (the
    // row sum adds the rounded values, so P V is normalised by what it used).
    static_assert(kTcK == 64, "two keys per lane");
    for (int rr = 0; rr < 16; ++rr) {
      const int r = w0 + rr;
      const int64_t i = i0 + r;
      float s0 = -INFINITY, s1 = -INFINITY;
      if (r < rows && j0 + lane <= i)
        s0 = ss[r * L.ldS + lane] * scale;
      if (r < rows && j0 + lane + 32 <= i)
        s1 = ss[r * L.ldS + lane + 32] * scale;
      float mx = fmaxf(s0, s1);
      for (int o = 16; o > 0; o >>= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float mOld = mRow[r], mNew = fmaxf(mOld, mx);
      const bool none = mNew == -INFINITY;
      const bf16 p0 = __float2bfloat16(none ? 0.0f : expf(s0 - mNew));
      const bf16 p1 = __float2bfloat16(none ? 0.0f : expf(s1 - mNew));
      ps[r * L.ldP + lane] = p0;
      ps[r * L.ldP + lane + 32] = p1;
      float sum = __bfloat162float(p0) + __bfloat162float(p1);
      for (int o = 16; o > 0; o >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
      if (lane == 0)
        softmaxRowUpdate(mRow, lRow, cRow, r, mOld, mNew, sum);
    }
    __syncwarp();
    for (int rr = 0; rr < 16; ++rr) {
      const float c = cRow[w0 + rr];
      float *o = os + (w0 + rr) * L.ldO;
      for (int64_t d = lane; d < L.vPad; d += 32)
        o[d] *= c;
    }
    __syncwarp();

    // O += P V for the warp's 16 rows.
    for (int64_t c = 0; c < L.vPad; c += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, os + w0 * L.ldO + c, unsigned(L.ldO),
                             wmma::mem_row_major);
      for (int k = 0; k < kTcK; k += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
        wmma::load_matrix_sync(a, ps + w0 * L.ldP + k, unsigned(L.ldP));
        wmma::load_matrix_sync(b, vs + k * L.ldV + c, unsigned(L.ldV));
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(os + w0 * L.ldO + c, acc, unsigned(L.ldO),
                              wmma::mem_row_major);
    }
  }
  __syncwarp();
  for (int rr = 0; rr < 16 && w0 + rr < rows; ++rr) {
    const int64_t r = w0 + rr;
    for (int64_t d = lane; d < vdim; d += 32)
      out[(i0 + r) * ldo + h * vdim + d] = os[r * L.ldO + d] / lRow[r];
  }
}

/// The mma prefill's v head dims held in registers (16 bf16 n-tiles of 8).
constexpr int kMmaVMax = 128;

/// mlaPrefillMmaKernel's shared memory: Q, K and V tiles in bf16 only (the
/// scores, probabilities and output stay in registers), 67 KB at
/// DeepSeek's head dims, so three blocks share a multiprocessor. Strides as
/// PrefillTcLayout's: 8 bf16 past the padded dims, so the fragment loads of
/// a row group's eight rows start on different banks.
struct PrefillMmaLayout {
  int64_t qPad, vPad, ldQK, ldV; ///< head dims rounded up to 16; strides
  int64_t offK, offV, bytes;     ///< byte offsets (Q at 0), total

  __host__ __device__ PrefillMmaLayout(int64_t qHead, int64_t vdim) {
    qPad = (qHead + 15) / 16 * 16;
    vPad = (vdim + 15) / 16 * 16;
    ldQK = qPad + 8, ldV = vPad + 8;
    offK = PrefillTcLayout::align(kTcQ * ldQK * 2);        // Q [kTcQ][ldQK]
    offV = offK + PrefillTcLayout::align(kTcK * ldQK * 2); // K [kTcK][ldQK]
    bytes = offV + PrefillTcLayout::align(kTcK * ldV * 2); // V [kTcK][ldV]
  }
};

/// Two consecutive bf16 of shared memory as one fragment register (the
/// lower index in the low half); p is 4-byte aligned (one 32-bit load,
/// where a memcpy from a bf16 pointer may become two).
__device__ inline uint32_t bf16Pair(const __nv_bfloat16 *p) {
  return *reinterpret_cast<const uint32_t *>(p);
}

/// Two bf16 from different rows as one fragment register (lo in the low
/// half).
__device__ inline uint32_t bf16Pair(const __nv_bfloat16 *lo,
                                    const __nv_bfloat16 *hi) {
  uint16_t a, b;
  memcpy(&a, lo, sizeof(a));
  memcpy(&b, hi, sizeof(b));
  return uint32_t(a) | uint32_t(b) << 16;
}

/// Causal attention of the naive (prefill) form on tensor cores, as
/// FlashAttention-2 keeps it: the same arguments, block shape (64 queries
/// of one head, 4 warps of 16) and rounding points as mlaPrefillTcKernel
/// (q, k, v and the probabilities in bf16, float32 scores, softmax and
/// output), but each warp's scores and output accumulate in registers
/// (mma.sync m16n8k16): the scores' C fragments are, pairwise, the A
/// fragments of P V, so no score or output tile goes through shared memory,
/// and only Q, K and V do. Needs vdim <= kMmaVMax.
__global__ void __launch_bounds__(kTcWarps * 32, 3)
    mlaPrefillMmaKernel(const float *q, int64_t ldq, const float *kv,
                        int64_t ldkv, const float *krope, int64_t ldk,
                        int64_t n, int64_t nope, int64_t vdim, int64_t qHead,
                        int64_t kvHead, float scale, float *out, int64_t ldo) {
  pdlEnter();
  using bf16 = __nv_bfloat16;
  DS_DYNAMIC_SHARED(unsigned char, smemMma);
  const PrefillMmaLayout L(qHead, vdim);
  bf16 *qs = reinterpret_cast<bf16 *>(smemMma);
  bf16 *ks = reinterpret_cast<bf16 *>(smemMma + L.offK);
  bf16 *vs = reinterpret_cast<bf16 *>(smemMma + L.offV);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int w0 = warp * 16, g = lane / 4, t = lane % 4;
  const int64_t h = blockIdx.y;
  // Later query tiles see more keys: they are scheduled first.
  const int64_t i0 = int64_t(gridDim.x - 1 - blockIdx.x) * kTcQ;
  const int64_t rows = imin(kTcQ, n - i0);
  const int64_t keys = i0 + rows; // the last query sees keys [0, keys)

  for (int64_t r = warp; r < kTcQ; r += kTcWarps) {
    const float *src = q + (i0 + r) * ldq + h * qHead;
    for (int64_t d = lane; d < L.qPad; d += 32)
      qs[r * L.ldQK + d] =
          __float2bfloat16(r < rows && d < qHead ? src[d] : 0.0f);
  }

  // Lane (g, t) holds rows w0 + g and w0 + g + 8 of the warp's 16: their
  // output columns 8 vt + 2t and + 1, softmax max and sum.
  constexpr int kVT = kMmaVMax / 8;
  const int vTiles = int(L.vPad / 8);
  float o[kVT][4];
#pragma unroll
  for (int vt = 0; vt < kVT; ++vt)
    o[vt][0] = o[vt][1] = o[vt][2] = o[vt][3] = 0.0f;
  float mRun[2] = {-INFINITY, -INFINITY}, lRun[2] = {0.0f, 0.0f};
  const int64_t qi[2] = {i0 + w0 + g, i0 + w0 + g + 8};
  const float scale2 = scale * 1.4426950408889634f; // log2(e)

  const float *kvHead0 = kv + h * kvHead; // this head's K/V columns
  const bool vec = prefillTileVec(kv, ldkv, krope, ldk, nope, qHead, vdim,
                                  kvHead, L.qPad, L.vPad);
  for (int64_t j0 = 0; j0 < keys; j0 += kTcK) {
    __syncthreads(); // every warp is done with the previous K and V
    loadPrefillTile(kvHead0, ldkv, krope, ldk, j0, keys, nope, qHead, vdim,
                    L.qPad, L.vPad, vec, ks, L.ldQK, vs, L.ldV);
    __syncthreads();
    if (w0 >= rows)
      continue; // this warp's queries are all padding

    // S = Q K^T: 8 n-tiles of 8 keys; Q's fragment once per k step.
    float sc[kTcK / 8][4];
#pragma unroll
    for (int nt = 0; nt < kTcK / 8; ++nt)
      sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
    for (int64_t k = 0; k < L.qPad; k += 16) {
      const bf16 *qa = qs + (w0 + g) * L.ldQK + k + 2 * t;
      const uint32_t a[4] = {bf16Pair(qa), bf16Pair(qa + 8 * L.ldQK),
                             bf16Pair(qa + 8), bf16Pair(qa + 8 * L.ldQK + 8)};
#pragma unroll
      for (int nt = 0; nt < kTcK / 8; ++nt) {
        const bf16 *kb = ks + (nt * 8 + g) * L.ldQK + k + 2 * t;
        const uint32_t b[2] = {bf16Pair(kb), bf16Pair(kb + 8)};
        mmaBf16(sc[nt], a, b);
      }
    }

    // Online softmax of rows g and g + 8 (a row's 64 scores are spread over
    // the 4 lanes of its group), in base 2: scores times scale * log2(e),
    // so each probability is one exp2 (the same values as exp of the scaled
    // scores). P in bf16; the sums add the rounded values, so P V is
    // normalised by what it used. Keys past a row's query are masked by
    // their offset in the tile (j0 <= i0 <= every query of the block).
    const int lim[2] = {int(imin(qi[0] - j0, kTcK)),
                        int(imin(qi[1] - j0, kTcK))};
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kTcK / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = nt * 8 + 2 * t + (e & 1);
        const float v = key <= lim[e / 2] ? sc[nt][e] * scale2 : -INFINITY;
        sc[nt][e] = v;
        mx[e / 2] = fmaxf(mx[e / 2], v);
      }
    float mNew[2], corr[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      mNew[r] = fmaxf(mRun[r], mx[r]);
    }
    uint32_t pw[kTcK / 8][2]; // [n-tile][row]: keys 2t, 2t + 1 of the tile
#pragma unroll
    for (int nt = 0; nt < kTcK / 8; ++nt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const bool none = mNew[r] == -INFINITY;
        const bf16 p0 =
            __float2bfloat16(none ? 0.0f : exp2f(sc[nt][2 * r] - mNew[r]));
        const bf16 p1 =
            __float2bfloat16(none ? 0.0f : exp2f(sc[nt][2 * r + 1] - mNew[r]));
        sum[r] += __bfloat162float(p0) + __bfloat162float(p1);
        pw[nt][r] = bf16Pair(&p0, &p1);
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
      sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
      corr[r] = mNew[r] == -INFINITY ? 1.0f : exp2f(mRun[r] - mNew[r]);
      mRun[r] = mNew[r];
      lRun[r] = lRun[r] * corr[r] + sum[r];
    }
#pragma unroll
    for (int vt = 0; vt < kVT; ++vt) {
      o[vt][0] *= corr[0], o[vt][1] *= corr[0];
      o[vt][2] *= corr[1], o[vt][3] *= corr[1];
    }

    // O += P V: P's A fragment for 16 keys is the scores' C fragments of
    // their two n-tiles; V's B fragment pairs rows 2t, 2t + 1 (+ 8).
#pragma unroll
    for (int kk = 0; kk < kTcK / 16; ++kk) {
      const uint32_t a[4] = {pw[2 * kk][0], pw[2 * kk][1], pw[2 * kk + 1][0],
                             pw[2 * kk + 1][1]};
      const bf16 *vb = vs + (kk * 16 + 2 * t) * L.ldV + g;
#pragma unroll
      for (int vt = 0; vt < kVT; ++vt) {
        if (vt >= vTiles)
          break;
        const bf16 *c = vb + vt * 8;
        const uint32_t b[2] = {bf16Pair(c, c + L.ldV),
                               bf16Pair(c + 8 * L.ldV, c + 9 * L.ldV)};
        mmaBf16(o[vt], a, b);
      }
    }
  }
  if (w0 >= rows)
    return;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = w0 + g + 8 * r;
    if (row >= rows)
      continue;
    const float inv = 1.0f / lRun[r];
    float *dst = out + (i0 + row) * ldo + h * vdim;
#pragma unroll
    for (int vt = 0; vt < kVT; ++vt) {
      const int64_t d = vt * 8 + 2 * t;
      if (d < vdim)
        dst[d] = o[vt][2 * r] * inv;
      if (d + 1 < vdim)
        dst[d + 1] = o[vt][2 * r + 1] * inv;
    }
  }
}

// decode (CUDA cores, f32 mode): heads per block. Each block streams its
// split's cache rows, so the cache is read ceil(heads / kHB) times per
// token (16 times for DeepSeek-V3's 128 heads). 16 would halve that but
// needs 160 registers (one block per multiprocessor instead of two); bf16
// mode has mlaDecodeTcKernel below (16 heads a block on tensor cores).
constexpr int kHB = 8;
constexpr int kTP = 8;   // decode: cache positions per tile
constexpr int kScoreLanes = 256 / (kHB * kTP); // decode: threads per score
static_assert(kHB * kTP * kScoreLanes == 256, "a score per thread group");
constexpr int kLMax = 4; // decode: latent dims per thread / 256 (lora <= 1024)

/// mlaDecodeKernel's dynamic shared memory, for cache rows of `row` floats.
inline size_t decodeSharedBytes(int64_t row) {
  return sizeof(float) *
         size_t(kHB * (row + 1) + kTP * (row + 1) + kHB * kTP + 3 * kHB);
}

/// One (token, head group, split): partial softmax state over the split's
/// cache positions (CT: float, or bf16 in bf16 mode).
/// part[((t * heads + h) * splits + s)] = [acc(lora), m, l].
template <class CT>
__global__ void
mlaDecodeKernel(const float *qLat, const float *q, int64_t ldq, int64_t qHead,
                int64_t nope, const CT *cache, const int32_t *blockTable,
                int64_t maxBlocks, const int32_t *tokenSeq, const int32_t *pos,
                int64_t layers, int64_t layer, int64_t heads, int64_t lora,
                int64_t rope, float scale, int splits, float *part) {
  pdlEnter();
  DS_DYNAMIC_SHARED(float, smem);
  const int64_t row = lora + rope, stride = row + 1;
  float *qs = smem;                   // [kHB][stride]
  float *tile = qs + kHB * stride;    // [kTP][stride]
  float *sc = tile + kTP * stride;    // [kHB][kTP]
  float *corr = sc + kHB * kTP;       // [kHB]
  float *mS = corr + kHB, *lS = mS + kHB;
  const int tid = threadIdx.x;
  const int64_t t = blockIdx.x, h0 = int64_t(blockIdx.y) * kHB;
  const int s = blockIdx.z;
  const int hb = int(imin(kHB, heads - h0));
  const int64_t keys = int64_t(pos[t]) + 1;
  const int64_t chunk = (keys + splits - 1) / splits;
  const int64_t k0 = int64_t(s) * chunk, k1 = imin(keys, k0 + chunk);
  const int32_t *table = blockTable + int64_t(tokenSeq[t]) * maxBlocks;

  // Rows a warp at a time, lanes along the row: no division per element.
  const int rowWarp = tid / 32, rowLane = tid % 32,
            warps = int(blockDim.x / 32);
  for (int hh = rowWarp; hh < kHB; hh += warps) {
    const float *lat = qLat + (t * heads + h0 + hh) * lora;
    const float *qr = q + t * ldq + (h0 + hh) * qHead + nope;
    for (int64_t d = rowLane; d < row; d += 32)
      qs[hh * stride + d] = hh < hb ? (d < lora ? lat[d] : qr[d - lora]) : 0.0f;
  }
  if (tid < kHB) {
    mS[tid] = -INFINITY;
    lS[tid] = 0.0f;
  }
  float acc[kHB][kLMax];
#pragma unroll
  for (int hh = 0; hh < kHB; ++hh)
#pragma unroll
    for (int r = 0; r < kLMax; ++r)
      acc[hh][r] = 0.0f;

  for (int64_t p0 = k0; p0 < k1; p0 += kTP) {
    __syncthreads();
    for (int r = rowWarp; r < kTP; r += warps) { // a cache row per warp
      const int64_t p = p0 + r;
      float *dst = tile + r * stride;
      if (p < k1) {
        const CT *src =
            cache +
            ((int64_t(table[p / 64]) * layers + layer) * 64 + p % 64) * row;
        for (int64_t d = rowLane; d < row; d += 32)
          dst[d] = toFloat(src[d]);
      } else {
        for (int64_t d = rowLane; d < row; d += 32)
          dst[d] = 0.0f;
      }
    }
    __syncthreads();
    { // kHB * kTP scores, kScoreLanes threads each (256 threads)
      const int pair = tid / kScoreLanes, lane = tid % kScoreLanes;
      const int hh = pair / kTP, r = pair % kTP;
      float sum = 0.0f;
      for (int64_t d = lane; d < row; d += kScoreLanes)
        sum += qs[hh * stride + d] * tile[r * stride + d];
      for (int o = kScoreLanes / 2; o > 0; o >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
      if (lane == 0)
        sc[hh * kTP + r] = (hh < hb && p0 + r < k1) ? sum * scale : -INFINITY;
    }
    __syncthreads();
    if (tid < kHB)
      corr[tid] = onlineSoftmaxStep(sc + tid * kTP, kTP, mS[tid], lS[tid]);
    __syncthreads();
#pragma unroll
    for (int hh = 0; hh < kHB; ++hh) {
      const float cr = corr[hh];
#pragma unroll
      for (int r = 0; r < kLMax; ++r) {
        const int64_t c = tid + 256 * r;
        if (c < lora) {
          float a = acc[hh][r] * cr;
#pragma unroll
          for (int pp = 0; pp < kTP; ++pp)
            a += sc[hh * kTP + pp] * tile[pp * stride + c];
          acc[hh][r] = a;
        }
      }
    }
  }
  __syncthreads();
#pragma unroll
  for (int hh = 0; hh < kHB; ++hh) {
    if (hh >= hb)
      break;
    float *dst = part + ((t * heads + h0 + hh) * splits + s) * (lora + 2);
#pragma unroll
    for (int r = 0; r < kLMax; ++r) {
      const int64_t c = tid + 256 * r;
      if (c < lora)
        dst[c] = acc[hh][r];
    }
    if (tid == 0) {
      dst[lora] = mS[hh];
      dst[lora + 1] = lS[hh];
    }
  }
}

/// Tensor-core decode (bf16 cache): a block takes 16 heads of one token
/// (one WMMA row tile, so the cache is read ceil(heads / 16) times per
/// token, half the SIMT kernel's) and streams its split's cache rows 32 at
/// a time: 4 warps, 4 block barriers per 32 positions where the SIMT kernel
/// takes 4 per 8. q is rounded to bf16 in shared memory (the cache already
/// is), P to bf16 as the tensor-core prefill rounds it; scores, softmax and
/// the output accumulate in float32.
constexpr int kDtH = 16, kDtP = 32, kDtWarps = 4;
/// Cache-row loads: rows a warp has in flight, 16-byte chunks per lane of
/// each (rows up to 768 bf16; longer ones take the element-wise loads).
constexpr int kDtRowsInFlight = 2, kDtChunks = 3;
static_assert(kDtP % (kDtWarps * kDtRowsInFlight) == 0, "whole row groups");

/// The tensor-core decode's shared memory, from the cache row (lora + rope)
/// and lora alone. Dims are rounded up to 16 (zero padding); row strides
/// add 8 bf16 / 4 floats, as the prefill's layout does.
struct DecodeTcLayout {
  int64_t rowPad, loraPad;                         ///< multiples of 16
  int64_t ldK, ldS, ldP, ldO;                      ///< row strides, in elements
  int64_t offK, offS, offP, offO, offStats, bytes; ///< byte offsets

  __host__ __device__ DecodeTcLayout(int64_t row, int64_t lora) {
    rowPad = (row + 15) / 16 * 16;
    loraPad = (lora + 15) / 16 * 16;
    ldK = rowPad + 8, ldS = kDtP + 4, ldP = kDtP + 8, ldO = loraPad + 4;
    using A = PrefillTcLayout;
    offK = A::align(kDtH * ldK * 2);            // after Q [kDtH][ldK] bf16
    offS = offK + A::align(kDtP * ldK * 2);     // cache rows [kDtP][ldK] bf16
    offP = offS + A::align(2 * kDtH * ldS * 4); // S, two halves of the row
    offO = offP + A::align(kDtH * ldP * 2);     // P [kDtH][ldP] bf16
    offStats = offO + A::align(kDtH * ldO * 4); // O [kDtH][ldO] float
    bytes = offStats + 3 * kDtH * 4;            // m, l, correction per head
  }
};

/// mlaDecodeKernel's arguments and partial results, on tensor cores, for a
/// bf16 cache: grid (tokens, ceil(heads / kDtH), splits), kDtWarps warps.
__global__ void __launch_bounds__(kDtWarps * 32)
    mlaDecodeTcKernel(const float *qLat, const float *q, int64_t ldq,
                      int64_t qHead, int64_t nope, const __nv_bfloat16 *cache,
                      const int32_t *blockTable, int64_t maxBlocks,
                      const int32_t *tokenSeq, const int32_t *pos,
                      int64_t layers, int64_t layer, int64_t heads,
                      int64_t lora, int64_t rope, float scale, int splits,
                      float *part) {
  pdlEnter();
  using namespace nvcuda;
  using bf16 = __nv_bfloat16;
  DS_DYNAMIC_SHARED(unsigned char, smemDt);
  const int64_t row = lora + rope;
  const DecodeTcLayout L(row, lora);
  bf16 *qs = reinterpret_cast<bf16 *>(smemDt);
  bf16 *ks = reinterpret_cast<bf16 *>(smemDt + L.offK);
  float *ss = reinterpret_cast<float *>(smemDt + L.offS);
  bf16 *ps = reinterpret_cast<bf16 *>(smemDt + L.offP);
  float *os = reinterpret_cast<float *>(smemDt + L.offO);
  float *mRow = reinterpret_cast<float *>(smemDt + L.offStats);
  float *lRow = mRow + kDtH, *cRow = lRow + kDtH;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t t = blockIdx.x, h0 = int64_t(blockIdx.y) * kDtH;
  const int s = blockIdx.z;
  const int64_t hb = imin(kDtH, heads - h0);
  const int64_t keys = int64_t(pos[t]) + 1;
  const int64_t chunk = (keys + splits - 1) / splits;
  const int64_t k0 = int64_t(s) * chunk, k1 = imin(keys, k0 + chunk);
  const int32_t *table = blockTable + int64_t(tokenSeq[t]) * maxBlocks;
  const bf16 zero = __float2bfloat16(0.0f);

  // q rows (latent, then rope part), zeros past the heads and the row.
  for (int64_t r = warp; r < kDtH; r += kDtWarps) {
    const bool live = r < hb;
    const float *lat = qLat + (t * heads + h0 + r) * lora;
    const float *qr = q + t * ldq + (h0 + r) * qHead + nope;
    for (int64_t d = lane; d < L.rowPad; d += 32) {
      float v = 0.0f;
      if (live && d < row)
        v = d < lora ? lat[d] : qr[d - lora];
      qs[r * L.ldK + d] = __float2bfloat16(v);
    }
    for (int64_t d = lane; d < L.loraPad; d += 32)
      os[r * L.ldO + d] = 0.0f;
  }
  if (tid < kDtH) {
    mRow[tid] = -INFINITY;
    lRow[tid] = 0.0f;
  }
  // Rows of 8k bf16 are 16-byte aligned (the cache is a device allocation);
  // 16-byte chunks of the padded row, kDtChunks per lane at most.
  const int chunks = int(row / 8), chunksPad = int(L.rowPad / 8);
  const bool vec = row % 8 == 0 && chunksPad <= 32 * kDtChunks;

  for (int64_t p0 = k0; p0 < k1; p0 += kDtP) {
    __syncthreads(); // every warp is done with the previous rows and P
    if (vec) {
      // A warp's rows two at a time, every load issued before any store
      // (each row's address waits for its block-table entry); chunks past
      // the row are the zero padding.
      for (int r0 = warp; r0 < kDtP; r0 += kDtWarps * kDtRowsInFlight) {
        uint4 v[kDtRowsInFlight][kDtChunks];
#pragma unroll
        for (int j = 0; j < kDtRowsInFlight; ++j) {
          const int64_t p = p0 + r0 + j * kDtWarps;
          const uint4 *src =
              p < k1 ? reinterpret_cast<const uint4 *>(
                           cache +
                           ((int64_t(table[p / 64]) * layers + layer) * 64 +
                            p % 64) *
                               row)
                     : nullptr;
#pragma unroll
          for (int c = 0; c < kDtChunks; ++c) {
            const int ch = lane + 32 * c;
            v[j][c] = uint4{0u, 0u, 0u, 0u};
            // Not __ldg: the launch before wrote this step's row while
            // this one was already resident (programmatic launch).
            if (src && ch < chunks)
              v[j][c] = __ldcg(src + ch);
          }
        }
#pragma unroll
        for (int j = 0; j < kDtRowsInFlight; ++j) {
          uint4 *dst =
              reinterpret_cast<uint4 *>(ks + (r0 + j * kDtWarps) * L.ldK);
#pragma unroll
          for (int c = 0; c < kDtChunks; ++c)
            if (lane + 32 * c < chunksPad)
              dst[lane + 32 * c] = v[j][c];
        }
      }
    } else {
      for (int r = warp; r < kDtP; r += kDtWarps) { // a cache row per warp
        const int64_t p = p0 + r;
        bf16 *dst = ks + r * L.ldK;
        int done = 0;
        if (p < k1) {
          const bf16 *src =
              cache +
              ((int64_t(table[p / 64]) * layers + layer) * 64 + p % 64) * row;
          for (int d = lane; d < int(row); d += 32)
            dst[d] = src[d];
          done = int(row);
        }
        for (int d = done + lane; d < int(L.rowPad); d += 32)
          dst[d] = zero;
      }
    }
    __syncthreads();

    // S = q K^T: warp w takes positions [16 (w % 2), +16) over half of the
    // row's 16-wide steps (w / 2); the softmax adds the halves.
    {
      const int c = warp % 2, half = warp / 2;
      const int steps = int(L.rowPad / 16), per = (steps + 1) / 2;
      const int kBeg = half * per,
                kEnd = kBeg + per < steps ? kBeg + per : steps;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int k = kBeg; k < kEnd; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
        wmma::load_matrix_sync(a, qs + k * 16, unsigned(L.ldK));
        wmma::load_matrix_sync(b, ks + c * 16 * L.ldK + k * 16,
                               unsigned(L.ldK));
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(ss + half * kDtH * L.ldS + c * 16, acc,
                              unsigned(L.ldS), wmma::mem_row_major);
    }
    __syncthreads();

    // Online softmax: a head per warp at a time, a position per lane; P in
    // bf16 (the row sum adds the rounded values, so P V is normalised by
    // what it used).
    static_assert(kDtP == 32, "a position per lane");
    for (int r = warp; r < kDtH; r += kDtWarps) {
      float sc = -INFINITY;
      if (p0 + lane < k1)
        sc = (ss[r * L.ldS + lane] + ss[(kDtH + r) * L.ldS + lane]) * scale;
      float mx = sc;
      for (int o = 16; o > 0; o >>= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float mOld = mRow[r], mNew = fmaxf(mOld, mx);
      const bool none = mNew == -INFINITY;
      const bf16 p = __float2bfloat16(none ? 0.0f : expf(sc - mNew));
      ps[r * L.ldP + lane] = p;
      float sum = __bfloat162float(p);
      for (int o = 16; o > 0; o >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
      if (lane == 0)
        softmaxRowUpdate(mRow, lRow, cRow, r, mOld, mNew, sum);
    }
    __syncthreads();

    // O = O corr + P V, the V rows being the cache rows' first lora values:
    // warp w owns the 16-column tiles w, w + kDtWarps, ... of O.
    for (int c = 16 * warp; c < int(L.loraPad); c += 16 * kDtWarps) {
      for (int e = lane; e < 16 * 16; e += 32)
        os[(e / 16) * L.ldO + c + e % 16] *= cRow[e / 16];
      __syncwarp();
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, os + c, unsigned(L.ldO), wmma::mem_row_major);
      for (int k = 0; k < kDtP; k += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
        wmma::load_matrix_sync(a, ps + k, unsigned(L.ldP));
        wmma::load_matrix_sync(b, ks + k * L.ldK + c, unsigned(L.ldK));
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(os + c, acc, unsigned(L.ldO),
                              wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int64_t r = warp; r < hb; r += kDtWarps) {
    float *dst = part + ((t * heads + h0 + r) * splits + s) * (lora + 2);
    for (int64_t d = lane; d < lora; d += 32)
      dst[d] = os[r * L.ldO + d];
    if (lane == 0) {
      dst[lora] = mRow[r];
      dst[lora + 1] = lRow[r];
    }
  }
}

/// Most splits of a decode call (mlaCombineKernel's warp holds two each).
constexpr int kMaxSplits = 64;
/// mlaCombineKernel: loads in flight per thread.
constexpr int kCombineLoads = 8;

/// oLat[t, h] = sum_s acc_s w_s, w_s = e^(m_s - M) / sum_s l_s e^(m_s - M)
/// for the splits at p ([splits][lora + 2]: acc, m, l) into dst [lora],
/// with every thread of the block: the first warp computes the splits'
/// weights once (into `weight`, kMaxSplits floats of shared memory), then
/// each thread's dims are independent loads over the splits. Ends with a
/// block barrier (`weight` may be reused).
__device__ inline void combineSplits(const float *p, int64_t lora, int splits,
                                     float *weight, float *dst) {
  if (threadIdx.x < 32) {
    const int a = int(threadIdx.x), b = a + 32;
    const float ma = a < splits ? p[a * (lora + 2) + lora] : -INFINITY;
    const float mb = b < splits ? p[b * (lora + 2) + lora] : -INFINITY;
    float M = fmaxf(ma, mb);
    for (int o = 16; o > 0; o >>= 1)
      M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    // An empty split (m = -inf) weighs nothing.
    const float ea = ma != -INFINITY ? expf(ma - M) : 0.0f;
    const float eb = mb != -INFINITY ? expf(mb - M) : 0.0f;
    float L = (ea != 0.0f ? p[a * (lora + 2) + lora + 1] * ea : 0.0f) +
              (eb != 0.0f ? p[b * (lora + 2) + lora + 1] * eb : 0.0f);
    for (int o = 16; o > 0; o >>= 1)
      L += __shfl_xor_sync(0xffffffffu, L, o);
    if (a < splits)
      weight[a] = ea / L;
    if (b < splits)
      weight[b] = eb / L;
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < lora; c += blockDim.x) {
    float acc = 0.0f;
    // kCombineLoads splits' values requested at once (every split wrote
    // its acc, zeros when empty), then added in split order.
    for (int s0 = 0; s0 < splits; s0 += kCombineLoads) {
      float v[kCombineLoads];
#pragma unroll
      for (int j = 0; j < kCombineLoads; ++j)
        v[j] = s0 + j < splits ? p[(s0 + j) * (lora + 2) + c] : 0.0f;
#pragma unroll
      for (int j = 0; j < kCombineLoads; ++j)
        if (s0 + j < splits && weight[s0 + j] != 0.0f) // empty: weighs 0
          acc += v[j] * weight[s0 + j];
    }
    dst[c] = acc;
  }
  __syncthreads();
}

/// combineSplits of block (token, head).
__global__ void mlaCombineKernel(const float *part, int64_t heads, int64_t lora,
                                 int splits, float *oLat) {
  pdlEnter();
  __shared__ float weight[kMaxSplits];
  const int64_t t = blockIdx.x, h = blockIdx.y;
  combineSplits(part + (t * heads + h) * splits * (lora + 2), lora, splits,
                weight, oLat + (t * heads + h) * lora);
}

/// absorbQKernel's block: 16 groups of 4 latent dims (64 dims) x 16 slices
/// of W_UK's rows, each thread holding up to 8 of its slice's rows.
constexpr int kAqGroups = 16, kAqSlices = 16, kAqRows = 8;
constexpr int64_t kAqDims = 4 * kAqGroups;

inline dim3 absorbQGrid(int64_t heads, int64_t lora) {
  return dim3(unsigned(heads), unsigned((lora + kAqDims - 1) / kAqDims));
}
/// q_nope of the n tokens (rounded up to 16 bytes), then the slices'
/// partial sums.
inline size_t absorbQSharedBytes(int64_t n, int64_t nope) {
  return size_t((n * nope + 3) / 4 * 4 + kAqSlices * kGemvRows * kAqDims) *
         sizeof(float);
}

/// The absorbed q product of a few tokens (n <= kGemvRows, decode), in place
/// of a strided-batched SGEMM: q_lat[t, h] = q_nope[t, h] W_UK[h], where
/// W_UK[h] is rows [h * kvHead, h * kvHead + nope) of kv_b [heads * kvHead,
/// lora]. Block (head, 64 latent dims): each thread loads its (up to 8)
/// rows' 4 dims at once (16-byte loads when `vec`: lora % 4 == 0) before
/// using any, so W_UK is requested in one wave across heads x lora / 64
/// blocks rather than row by row; the 16 slices' sums meet in shared memory.
/// kv_b in float32 or bf16 (WT; `vec`: 16- or 8-byte loads of 4 dims): the
/// same sums of the same values either way.
template <class WT>
__device__ inline void absorbQBlock(const float *q, int64_t ldq, int64_t qHead,
                                    int64_t n, const WT *kvB, int64_t kvHead,
                                    int64_t nope, int64_t lora, int64_t heads,
                                    float *qLat, bool vec) {
  DS_DYNAMIC_SHARED(float, smem);
  const int64_t h = blockIdx.x;
  float *qs = smem, *partial = smem + (n * nope + 3) / 4 * 4;
  const int g = int(threadIdx.x % kAqGroups), sl = int(threadIdx.x / kAqGroups);
  const int64_t c0 = int64_t(blockIdx.y) * kAqDims + 4 * g;
  const WT *w = kvB + h * kvHead * lora + c0;
  float wv[kAqRows][4];
  auto loadW = [&](int64_t i0) {
#pragma unroll
    for (int r = 0; r < kAqRows; ++r) {
      const int64_t i = i0 + int64_t(r) * kAqSlices;
      if (i < nope && vec && c0 < lora) {
        if constexpr (std::is_same<WT, float>::value) {
          const float4 v =
              __ldg(reinterpret_cast<const float4 *>(w + i * lora));
          wv[r][0] = v.x, wv[r][1] = v.y, wv[r][2] = v.z, wv[r][3] = v.w;
        } else {
          const uint2 v = __ldg(reinterpret_cast<const uint2 *>(w + i * lora));
          const __nv_bfloat16 *b = reinterpret_cast<const __nv_bfloat16 *>(&v);
#pragma unroll
          for (int j = 0; j < 4; ++j)
            wv[r][j] = __bfloat162float(b[j]);
        }
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j)
          wv[r][j] =
              i < nope && c0 + j < lora ? toFloat(w[i * lora + j]) : 0.0f;
      }
    }
  };
  // The first rows of W_UK (a weight: never written) are requested before
  // the wait for the previous kernel, so they arrive during its tail.
  constexpr int64_t kStep = kAqSlices * kAqRows;
  loadW(sl);
  pdlEnter();
  for (int64_t e = threadIdx.x; e < n * nope; e += blockDim.x)
    qs[e] = q[(e / nope) * ldq + h * qHead + e % nope];
  __syncthreads();
  float acc[kGemvRows][4];
#pragma unroll
  for (int t = 0; t < kGemvRows; ++t)
#pragma unroll
    for (int j = 0; j < 4; ++j)
      acc[t][j] = 0.0f;
  for (int64_t i0 = sl; i0 < nope; i0 += kStep) {
    if (i0 > sl)
      loadW(i0);
#pragma unroll
    for (int r = 0; r < kAqRows; ++r) {
      const int64_t i = i0 + int64_t(r) * kAqSlices;
      if (i >= nope)
        break;
#pragma unroll
      for (int t = 0; t < kGemvRows; ++t)
        if (t < n) {
          const float qv = qs[t * nope + i];
#pragma unroll
          for (int j = 0; j < 4; ++j)
            acc[t][j] += qv * wv[r][j];
        }
    }
  }
#pragma unroll
  for (int t = 0; t < kGemvRows; ++t) // static indices: acc in registers
#pragma unroll
    for (int j = 0; j < 4; ++j)
      partial[(sl * kGemvRows + t) * kAqDims + 4 * g + j] = acc[t][j];
  __syncthreads();
  for (int64_t e = threadIdx.x; e < n * kAqDims; e += blockDim.x) {
    const int64_t t = e / kAqDims, d = e % kAqDims,
                  c = int64_t(blockIdx.y) * kAqDims + d;
    if (c >= lora)
      continue;
    float sum = 0.0f;
    for (int s2 = 0; s2 < kAqSlices; ++s2)
      sum += partial[(s2 * kGemvRows + t) * kAqDims + d];
    qLat[(t * heads + h) * lora + c] = sum;
  }
}

template <class WT>
__global__ void __launch_bounds__(kAqGroups *kAqSlices)
    absorbQKernel(const float *q, int64_t ldq, int64_t qHead, int64_t n,
                  const WT *kvB, int64_t kvHead, int64_t nope, int64_t lora,
                  int64_t heads, float *qLat, bool vec) {
  absorbQBlock(q, ldq, qHead, n, kvB, kvHead, nope, lora, heads, qLat, vec);
}

static_assert(kAqGroups * kAqSlices == kNormThreads,
              "the prologue's blocks normalize as addRmsNormKernel does");

/// absorbQKernel's blocks (blockIdx.y < qBlocksY) and, beside them, the
/// blocks of dsk.mla_attention_absorbed's rope prologue: block (x, y >=
/// qBlocksY) writes token (y - qBlocksY) * gridDim.x + x (of n) to the
/// cache, rotating its query's rope columns first. One launch where there
/// were two: the q product reads only each head's first nope columns, which
/// the prologue leaves alone, and the attention that reads what the
/// prologue wrote is the next launch.
template <class CT, class WT>
__global__ void __launch_bounds__(kAqGroups *kAqSlices)
    absorbQRopeKernel(const float *q, int64_t ldq, int64_t qHead, int64_t n,
                      const WT *kvB, int64_t kvHead, int64_t nope, int64_t lora,
                      int64_t heads, float *qLat, bool vec, unsigned qBlocksY,
                      rowk::CacheWrite<CT> cw) {
  if (blockIdx.y >= qBlocksY) {
    pdlEnter();
    const int64_t i = int64_t(blockIdx.y - qBlocksY) * gridDim.x + blockIdx.x;
    if (i < n)
      rowk::cacheWriteRow(cw, i);
    return;
  }
  absorbQBlock(q, ldq, qHead, n, kvB, kvHead, nope, lora, heads, qLat, vec);
}

/// out[t, h * vdim + j] = o_lat[t, h] . W_UV[h][j], W_UV[h][j] row
/// h * kvHead + nope + j of kv_b: block (head, 8 columns j), the GEMV's
/// warp per column over the n <= kGemvRows tokens; kv_b in float32 or bf16
/// (WT: the same sums).
template <class WT>
__global__ void absorbOutKernel(const float *oLat, int64_t heads, int64_t lora,
                                const WT *kvB, int64_t kvHead, int64_t nope,
                                int64_t vdim, int64_t n, float *out,
                                int64_t ldo, bool vec) {
  // No pdlEnter here: gemvColumns waits after its first W_UV loads.
  const int64_t h = blockIdx.x;
  const int64_t col0 =
      int64_t(blockIdx.y) * (blockDim.x / 32) + threadIdx.x / 32;
  if (col0 >= vdim)
    return;
  gemvColumns<WT, false, 32>(Rows{oLat + h * lora, heads * lora, nullptr, 1},
                             kvB + (h * kvHead + nope) * lora, nullptr, 0, n,
                             lora, vdim, col0, out + h * vdim, ldo, vec, false,
                             /*deferWait=*/true);
}

/// absorbOutCombineKernel's block: 32 columns of W_UV (a warp of four).
constexpr int64_t kAoColumns = 32;
/// The split rows a block of absorbOutCombineKernel combines at most
/// (n tokens x splits): beyond, the separate combine (which reads each once)
/// costs less than the fused one's vdim / 32 reads per head.
constexpr int64_t kAoMaxSplitRows = kMaxSplits;

inline dim3 absorbOutCombineGrid(int64_t heads, int64_t vdim) {
  return dim3(unsigned(heads), unsigned((vdim + kAoColumns - 1) / kAoColumns));
}
inline size_t absorbOutCombineSharedBytes(int64_t n, int64_t lora) {
  return size_t(n * lora) * sizeof(float);
}

/// mlaCombineKernel, then absorbOutKernel, in one launch for a few tokens
/// of few splits (decode at batch 1): block (head, 32 columns) combines its
/// head's splits for the n tokens into shared memory (each of the head's
/// blocks does; the same bits as mlaCombineKernel), then multiplies them
/// with its W_UV rows, four columns a warp. The W_UV rows are asked into L2
/// before the wait for the attention, so they arrive during its tail. One
/// launch and one kernel boundary fewer per layer. kv_b in float32 or bf16
/// (WT: the same sums).
template <class WT>
__global__ void __launch_bounds__(256)
    absorbOutCombineKernel(const float *part, int splits, int64_t heads,
                           int64_t lora, const WT *kvB, int64_t kvHead,
                           int64_t nope, int64_t vdim, int64_t n, float *out,
                           int64_t ldo, bool vec) {
  DS_DYNAMIC_SHARED(float, oLatShared); // [n, lora]
  __shared__ float weight[kMaxSplits];
  const int64_t h = blockIdx.x, c0 = int64_t(blockIdx.y) * kAoColumns;
  const WT *wuv = kvB + (h * kvHead + nope) * lora;
  // The block's W_UV rows are contiguous: a 128-byte line a thread.
  constexpr int64_t kLine = 128 / sizeof(WT);
  const int64_t span = imin(kAoColumns, vdim - c0) * lora;
  for (int64_t e = int64_t(threadIdx.x) * kLine; e < span;
       e += int64_t(blockDim.x) * kLine)
    prefetchL2(wuv + c0 * lora + e);
  pdlEnter();
  for (int64_t t = 0; t < n; ++t)
    combineSplits(part + (t * heads + h) * splits * (lora + 2), lora, splits,
                  weight, oLatShared + t * lora);
  const int64_t col0 = c0 + int64_t(threadIdx.x / 32) * gemvColumnsPerWarp<8>();
  gemvColumns<WT, false, 8>(Rows{oLatShared, lora, nullptr, 1}, wuv, nullptr, 0,
                            n, lora, vdim, col0, out + h * vdim, ldo, vec);
}

} // namespace mla
} // namespace cuda
} // namespace dsrt

#endif // DS_LIB_RUNTIME_CUDA_MLAKERNELS_CUH
