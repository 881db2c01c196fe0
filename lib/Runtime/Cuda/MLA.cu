//===- MLA.cu - multi-head latent attention on the GPU --------------------===//
//
// Prefill (naive form): flash-attention style, causal, with an online
// softmax. bf16 mode runs it on tensor cores (a block takes 64 queries of
// one head and streams 64 keys at a time, bf16 operands, float32
// accumulation): scores and output in registers (mma.sync, as
// FlashAttention-2) up to 128 v dims, else through shared memory (WMMA);
// f32 mode, which must match the CPU backend to 1e-4, keeps float32 on CUDA
// cores (16 queries, 16 keys per tile).
//
// Decode (absorbed form), as FlashMLA splits it: q_lat = q_nope W_UK per
// head, then attention over the latent cache rows (lora + rope values, read
// through the block table) split over the sequence like flash-decoding (a
// fixed number of splits, so a captured graph fits any position), a combine
// of the splits, and o = o_lat W_UV^T (at batch 1 the combine is done in the
// output product's blocks). The two per-head products are our
// kernels for up to 8 tokens, strided-batched SGEMMs above. The attention
// over a bf16 cache (bf16 mode) runs on tensor cores, 16 heads a block;
// over a float32 one (f32 mode) on CUDA cores, 8 heads a block.
//
//===----------------------------------------------------------------------===//

#include "CudaCommon.h"
#include "MLAKernels.cuh"

#include <cstdio>
#include <cstring>
#include <type_traits>
#include <vector>

namespace dsrt {
namespace cuda {

namespace {

using namespace mla;

size_t raiseSmem(const void *kernel, size_t bytes, const char *where) {
  if (bytes > 48 * 1024)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               int(bytes)),
          where);
  return bytes;
}

} // namespace

void mlaAttentionNaive(Context &ctx, const float *q, int64_t ldq,
                       const float *kv, int64_t ldkv, const float *krope,
                       int64_t ldk, int64_t n, int64_t heads, int64_t nope,
                       int64_t rope, int64_t vdim, double scale, float *out,
                       int64_t ldo) {
  ProfileScope profile(ctx, "mlaAttentionNaive");
  if (n <= 0)
    return;
  if (vdim > 16 * kVMax)
    fatal("mlaAttentionNaive", "v head dim above 256");
  DeviceState &st = state(ctx);
  const int64_t qHead = nope + rope, kvHead = nope + vdim;
  // bf16 mode: tensor cores, where the head dims fit the shared memory;
  // scores and output in registers (mma.sync) up to kMmaVMax v dims.
  const PrefillMmaLayout mma(qHead, vdim);
  if (st.dtype == ComputeDtype::BF16 && st.mlaPrefillMma && vdim <= kMmaVMax &&
      size_t(mma.bytes) <= st.sharedOptin) {
    raiseSmem((const void *)mlaPrefillMmaKernel, size_t(mma.bytes),
              "mlaAttentionNaive");
    dim3 grid(unsigned((n + kTcQ - 1) / kTcQ), unsigned(heads));
    launchKernel(st, "mlaAttentionNaive", mlaPrefillMmaKernel, grid,
                 kTcWarps * 32, size_t(mma.bytes), q, ldq, kv, ldkv, krope, ldk,
                 n, nope, vdim, qHead, kvHead, float(scale), out, ldo);
    return;
  }
  const PrefillTcLayout tc(qHead, vdim);
  if (st.dtype == ComputeDtype::BF16 && size_t(tc.bytes) <= st.sharedOptin) {
    raiseSmem((const void *)mlaPrefillTcKernel, size_t(tc.bytes),
              "mlaAttentionNaive");
    dim3 grid(unsigned((n + kTcQ - 1) / kTcQ), unsigned(heads));
    launchKernel(st, "mlaAttentionNaive", mlaPrefillTcKernel, grid,
                 kTcWarps * 32, size_t(tc.bytes), q, ldq, kv, ldkv, krope, ldk,
                 n, nope, vdim, qHead, kvHead, float(scale), out, ldo);
    return;
  }
  const size_t bytes = prefillSharedBytes(qHead, vdim);
  raiseSmem((const void *)mlaPrefillKernel, bytes, "mlaAttentionNaive");
  dim3 grid(unsigned((n + kQT - 1) / kQT), unsigned(heads));
  launchKernel(st, "mlaAttentionNaive", mlaPrefillKernel, grid, 256, bytes, q,
               ldq, kv, ldkv, krope, ldk, n, nope, rope, vdim, qHead, kvHead,
               float(scale), out, ldo);
}

namespace {

/// dsk.mla_attention_absorbed's rope prologue (qkRopeCacheWrite's
/// arguments but the query's).
struct Prologue {
  const float *latent;
  int64_t ldl;
  float *krope;
  int64_t ldk;
  int64_t ropeIndex;
  const float *normW;
  double eps;
};

void absorbed(Context &ctx, int64_t layer, float *q, int64_t ldq,
              const float *kvB, const int32_t *pos, int64_t n, int64_t heads,
              int64_t nope, int64_t rope, int64_t vdim, double scale,
              float *out, int64_t ldo, const Prologue *pro) {
  DeviceState &st = state(ctx);
  if (n <= 0) {
    if (pro) // its checks
      qkRopeCacheWrite(ctx, layer, q, ldq, heads, nope + rope, nope,
                       pro->latent, pro->ldl, pro->krope, pro->ldk, pos, n,
                       pro->ropeIndex, pro->normW, pro->eps);
    return;
  }
  const ModelSpec &spec = ctx.spec();
  const int64_t lora = spec.kvLoraRank;
  if (rope != spec.qkRopeDim)
    fatal("mlaAttentionAbsorbed", "rope dim differs from the cache's");
  if (layer < 0 || layer >= spec.cacheLayers || !st.cache)
    fatal("mlaAttentionAbsorbed", "layer outside the cache");
  if (lora > 256 * kLMax)
    fatal("mlaAttentionAbsorbed", "kv_lora_rank above 1024");
  if (pos != st.pos)
    fatal("mlaAttentionAbsorbed", "positions are not the program's");
  const int64_t qHead = nope + rope, kvHead = nope + vdim;
  const int64_t row = lora + rope;
  // A bf16 cache: tensor cores, 16 heads a block, where the layout fits.
  const DecodeTcLayout tc(row, lora);
  const bool tensorCores =
      st.cacheBf16 && st.mlaDecodeTc && size_t(tc.bytes) <= st.sharedOptin;
  // Splits from n and the cache length only (graphs replay at any
  // position): about two blocks per multiprocessor, each split at least a
  // step of the kernel (tensor cores: 32 positions; CUDA cores: 64, a
  // cache block) of the longest sequence. The tensor-core kernel's blocks
  // take twice the heads, so its shorter minimum keeps the block count up
  // (the benchmark's 16 heads at B=1: 40 blocks, not 20).
  const int64_t hb = tensorCores ? kDtH : kHB, step = tensorCores ? kDtP : 64;
  const int64_t groups = (heads + hb - 1) / hb;
  const int64_t wanted = (2 * st.multiprocessors + n * groups - 1) / (n * groups);
  const int splits = int(std::max<int64_t>(
      1, imin(imin(wanted, kMaxSplits), (spec.maxSeqLen + step - 1) / step)));
  float *qLat = static_cast<float *>(scratch(
      st, size_t(n * heads * lora) * sizeof(float), "mlaAttentionAbsorbed"));
  float *part = static_cast<float *>(scratch(
      st, size_t(n * heads * splits * (lora + 2)) * sizeof(float),
      "mlaAttentionAbsorbed"));
  const float one = 1.0f, zero = 0.0f;
  // A few tokens: the absorbed products as our kernels (kv_b read once,
  // launched like the rest, so no cuBLAS gap in a decode step); more: the
  // strided-batched SGEMMs.
  const bool few = n <= imin(st.gemvMaxRows, kGemvRows);
  // Our kernels read kv_b in bf16 where that is exact: the same products,
  // half the bytes (their launches say "bf16 kv_b"). f(w) launches with w,
  // kv_b as float or bf16.
  const __nv_bfloat16 *kvB16 =
      few ? bf16Twin(ctx, kvB, "mlaAttentionAbsorbed") : nullptr;
  auto withKvB = [&](auto f) {
    if (kvB16)
      f(kvB16);
    else
      f(kvB);
  };
  // q_lat[t, h] = q_nope[t, h] W_UK[h]: column-major C [lora, n] per head
  // (16- or 8-byte loads of 4 dims).
  const size_t kvBElt = kvB16 ? sizeof(__nv_bfloat16) : sizeof(float);
  const void *kvBAt =
      kvB16 ? static_cast<const void *>(kvB16) : static_cast<const void *>(kvB);
  const bool vecKvB =
      lora % 4 == 0 && reinterpret_cast<uintptr_t>(kvBAt) % (4 * kvBElt) == 0;
  if (few && pro) {
    // The prologue's blocks in the q product's launch: rows of `heads`
    // blocks after its grid's.
    const dim3 qGrid = absorbQGrid(heads, lora);
    const unsigned ropeRows = unsigned((n + heads - 1) / heads);
    const dim3 grid(qGrid.x, qGrid.y + ropeRows);
    const size_t qBytes = absorbQSharedBytes(n, nope);
    const rowk::QRope qr{q, ldq, heads, qHead, nope};
    const DeviceState::Rope *t = &st.ropes[size_t(pro->ropeIndex)];
    const char *where = kvB16 ? "mlaAttentionAbsorbed (q_lat + rope, bf16 kv_b)"
                              : "mlaAttentionAbsorbed (q_lat + rope)";
    withKvB([&](auto w) {
      using WT = std::remove_const_t<std::remove_pointer_t<decltype(w)>>;
      if (st.cacheBf16) {
        const auto cw = cacheWriteArgs<__nv_bfloat16>(
            ctx, layer, pro->latent, pro->ldl, pro->krope, pro->ldk, pos, t, qr,
            pro->normW, pro->eps, where);
        raiseSmem((const void *)absorbQRopeKernel<__nv_bfloat16, WT>, qBytes,
                  where);
        launchKernel(st, where, absorbQRopeKernel<__nv_bfloat16, WT>, grid,
                     kAqGroups * kAqSlices, qBytes, q, ldq, qHead, n, w, kvHead,
                     nope, lora, heads, qLat, vecKvB, qGrid.y, cw);
      } else {
        const auto cw = cacheWriteArgs<float>(ctx, layer, pro->latent, pro->ldl,
                                              pro->krope, pro->ldk, pos, t, qr,
                                              pro->normW, pro->eps, where);
        raiseSmem((const void *)absorbQRopeKernel<float, WT>, qBytes, where);
        launchKernel(st, where, absorbQRopeKernel<float, WT>, grid,
                     kAqGroups * kAqSlices, qBytes, q, ldq, qHead, n, w, kvHead,
                     nope, lora, heads, qLat, vecKvB, qGrid.y, cw);
      }
    });
  } else if (few) {
    withKvB([&](auto w) {
      using WT = std::remove_const_t<std::remove_pointer_t<decltype(w)>>;
      const size_t qBytes =
          raiseSmem((const void *)absorbQKernel<WT>,
                    absorbQSharedBytes(n, nope), "mlaAttentionAbsorbed");
      launchKernel(st,
                   kvB16 ? "mlaAttentionAbsorbed (q_lat, bf16 kv_b)"
                         : "mlaAttentionAbsorbed (q_lat)",
                   absorbQKernel<WT>, absorbQGrid(heads, lora),
                   kAqGroups * kAqSlices, qBytes, q, ldq, qHead, n, w, kvHead,
                   nope, lora, heads, qLat, vecKvB);
    });
  } else {
    if (pro) // its own launch first
      qkRopeCacheWrite(ctx, layer, q, ldq, heads, qHead, nope, pro->latent,
                       pro->ldl, pro->krope, pro->ldk, pos, n, pro->ropeIndex,
                       pro->normW, pro->eps);
    check(cublasSgemmStridedBatched(
              st.blas, CUBLAS_OP_N, CUBLAS_OP_N, int(lora), int(n), int(nope),
              &one, kvB, int(lora), kvHead * lora, q, int(ldq), qHead, &zero,
              qLat, int(heads * lora), lora, int(heads)),
          "mlaAttentionAbsorbed (q_lat)");
  }
  const size_t bytes = decodeSharedBytes(row);
  const dim3 grid{unsigned(n), unsigned(groups), unsigned(splits)};
  if (tensorCores) {
    raiseSmem((const void *)mlaDecodeTcKernel, size_t(tc.bytes),
              "mlaAttentionAbsorbed");
    launchKernel(st, "mlaAttentionAbsorbed (attention)", mlaDecodeTcKernel,
                 grid, kDtWarps * 32, size_t(tc.bytes), qLat, q, ldq, qHead,
                 nope, static_cast<const __nv_bfloat16 *>(st.cache),
                 st.blockTable, st.maxBlocks, st.tokenSeq, st.pos, st.layers,
                 layer, heads, lora, rope, float(scale), splits, part);
  } else if (st.cacheBf16) {
    raiseSmem((const void *)mlaDecodeKernel<__nv_bfloat16>, bytes,
              "mlaAttentionAbsorbed");
    launchKernel(st, "mlaAttentionAbsorbed (attention)",
                 mlaDecodeKernel<__nv_bfloat16>, grid, 256, bytes, qLat, q, ldq,
                 qHead, nope, static_cast<const __nv_bfloat16 *>(st.cache),
                 st.blockTable, st.maxBlocks, st.tokenSeq, st.pos, st.layers,
                 layer, heads, lora, rope, float(scale), splits, part);
  } else {
    raiseSmem((const void *)mlaDecodeKernel<float>, bytes,
              "mlaAttentionAbsorbed");
    launchKernel(st, "mlaAttentionAbsorbed (attention)", mlaDecodeKernel<float>,
                 grid, 256, bytes, qLat, q, ldq, qHead, nope,
                 static_cast<const float *>(st.cache), st.blockTable,
                 st.maxBlocks, st.tokenSeq, st.pos, st.layers, layer, heads,
                 lora, rope, float(scale), splits, part);
  }
  // Few split rows (batch 1): the combine in the output product's launch.
  if (few && st.mlaFusedCombine && n * splits <= kAoMaxSplitRows) {
    withKvB([&](auto w) {
      using WT = std::remove_const_t<std::remove_pointer_t<decltype(w)>>;
      launchKernel(
          st,
          kvB16 ? "mlaAttentionAbsorbed (combine + output, bf16 kv_b)"
                : "mlaAttentionAbsorbed (combine + output)",
          absorbOutCombineKernel<WT>, absorbOutCombineGrid(heads, vdim), 256,
          absorbOutCombineSharedBytes(n, lora), part, splits, heads, lora, w,
          kvHead, nope, vdim, n, out, ldo, vecRows(w, lora, lora, sizeof(WT)));
    });
    return;
  }
  float *oLat = static_cast<float *>(scratch(
      st, size_t(n * heads * lora) * sizeof(float), "mlaAttentionAbsorbed"));
  launchKernel(st, "mlaAttentionAbsorbed (combine)", mlaCombineKernel,
               dim3(unsigned(n), unsigned(heads)), 256, 0, part, heads, lora,
               splits, oLat);
  // out[t, h] = o_lat[t, h] W_UV[h]^T: column-major C [vdim, n] per head.
  if (few)
    withKvB([&](auto w) {
      using WT = std::remove_const_t<std::remove_pointer_t<decltype(w)>>;
      launchKernel(st,
                   kvB16 ? "mlaAttentionAbsorbed (output, bf16 kv_b)"
                         : "mlaAttentionAbsorbed (output)",
                   absorbOutKernel<WT>,
                   dim3(unsigned(heads), unsigned((vdim + 7) / 8)), 256, 0,
                   oLat, heads, lora, w, kvHead, nope, vdim, n, out, ldo,
                   vecRows(oLat, heads * lora, lora, sizeof(float)) &&
                       vecRows(w, lora, lora, sizeof(WT)));
    });
  else
    check(cublasSgemmStridedBatched(
              st.blas, CUBLAS_OP_T, CUBLAS_OP_N, int(vdim), int(n), int(lora),
              &one, kvB + nope * lora, int(lora), kvHead * lora, oLat,
              int(heads * lora), lora, &zero, out, int(ldo), vdim, int(heads)),
          "mlaAttentionAbsorbed (output)");
}

} // namespace

void mlaAttentionAbsorbed(Context &ctx, int64_t layer, const float *q,
                          int64_t ldq, const float *kvB, const int32_t *pos,
                          int64_t n, int64_t heads, int64_t nope, int64_t rope,
                          int64_t vdim, double scale, float *out, int64_t ldo) {
  ProfileScope profile(ctx, "mlaAttentionAbsorbed");
  // Without the prologue q is only read.
  absorbed(ctx, layer, const_cast<float *>(q), ldq, kvB, pos, n, heads, nope,
           rope, vdim, scale, out, ldo, nullptr);
}

void mlaAttentionAbsorbedRope(Context &ctx, int64_t layer, float *q,
                              int64_t ldq, const float *kvB, const int32_t *pos,
                              int64_t n, int64_t heads, int64_t nope,
                              int64_t rope, int64_t vdim, double scale,
                              float *out, int64_t ldo, const float *latent,
                              int64_t ldl, float *krope, int64_t ldk,
                              int64_t ropeIndex, const float *normW,
                              double eps) {
  ProfileScope profile(ctx, "mlaAttentionAbsorbedRope");
  const Prologue pro{latent, ldl, krope, ldk, ropeIndex, normW, eps};
  absorbed(ctx, layer, q, ldq, kvB, pos, n, heads, nope, rope, vdim, scale, out,
           ldo, &pro);
}

} // namespace cuda
} // namespace dsrt
