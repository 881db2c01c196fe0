//===- Convert.h - checkpoint dtypes to float32, random weights -*- C++ -*-===//
//
// Header-only so the unit tests can check them without a Context. All
// conversions to float32 are exact: every BF16, F16 and F8_E4M3 value is a
// float32. floatToE4M3 / quantizeE4M3BlockRow go the other way (FP8 weights
// quantized on load, FP8 activations), as does floatToBf16 (random weights
// of BF16 models kept in bf16).
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_CONVERT_H
#define DS_LIB_RUNTIME_CONVERT_H

#include "ds/Runtime/Runtime.h"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace dsrt {

inline float bitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// bfloat16 is the upper half of a float32.
inline float bf16ToFloat(uint16_t h) { return bitsToFloat(uint32_t(h) << 16); }

/// float32 to bfloat16, round to nearest, ties to even (overflow gives
/// +-inf, as IEEE rounding does); NaN stays a (quiet) NaN of the same sign.
inline uint16_t floatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u)
    return uint16_t((bits >> 16) | 0x0040u);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

/// IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
inline float f16ToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t man = h & 0x3FF;
  if (exp == 0) { // zero or subnormal: man * 2^-24, exact in float32
    float v = float(man) * 0x1p-24f;
    return sign ? -v : v;
  }
  if (exp == 31) // inf, or NaN with its payload kept
    return bitsToFloat(sign | 0x7F800000u | man << 13);
  return bitsToFloat(sign | (exp - 15 + 127) << 23 | man << 13);
}

/// float8 e4m3fn (OCP FP8, as in DeepSeek-V3 checkpoints): 1 sign, 4 exponent
/// (bias 7), 3 mantissa bits; no infinities, S.1111.111 is NaN, the largest
/// finite value is 448.
inline float e4m3ToFloat(uint8_t b) {
  uint32_t sign = uint32_t(b & 0x80) << 24;
  uint32_t exp = (b >> 3) & 0xF;
  uint32_t man = b & 0x7;
  if (exp == 15 && man == 7)
    return bitsToFloat(sign | 0x7FC00000u);
  if (exp == 0) { // zero or subnormal: man * 2^-9
    float v = float(man) * 0x1p-9f;
    return sign ? -v : v;
  }
  return bitsToFloat(sign | (exp - 7 + 127) << 23 | man << 20);
}

/// Converts n elements of a non-FP8 dtype (or FP8 without scaling) at `src`
/// (any alignment, little-endian) to float32.
inline void convertToFloat(DType dtype, const uint8_t *src, int64_t n,
                           float *dst) {
  switch (dtype) {
  case DType::F32:
    std::memcpy(dst, src, size_t(n) * 4);
    return;
  case DType::BF16:
  case DType::F16:
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = dtype == DType::BF16 ? bf16ToFloat(h) : f16ToFloat(h);
    }
    return;
  case DType::F8E4M3:
    for (int64_t i = 0; i < n; ++i)
      dst[i] = e4m3ToFloat(src[i]);
    return;
  }
}

/// Side of the square blocks that share one FP8 scale in DeepSeek's
/// checkpoints ("weight_block_size": [128, 128]).
constexpr int64_t kFp8Block = 128;

/// Rows [rowBegin, rowEnd) of an F8_E4M3 matrix [rows, cols] times their
/// block scales `scaleInv` [ceil(rows/128), ceil(cols/128)] (the
/// checkpoint's "*_scale_inv": multiplying dequantizes). The last block row
/// and column may be partial.
inline void dequantE4M3(const uint8_t *src, int64_t cols, const float *scaleInv,
                        int64_t rowBegin, int64_t rowEnd, float *dst) {
  const int64_t blockCols = (cols + kFp8Block - 1) / kFp8Block;
  for (int64_t r = rowBegin; r < rowEnd; ++r) {
    const float *scales = scaleInv + (r / kFp8Block) * blockCols;
    const uint8_t *in = src + r * cols;
    float *out = dst + r * cols;
    for (int64_t c = 0; c < cols; ++c)
      out[c] = e4m3ToFloat(in[c]) * scales[c / kFp8Block];
  }
}

/// float32 to float8 e4m3fn (OCP FP8), saturating: round to nearest, ties to
/// even (also into the subnormals, whose step is 2^-9); finite values and
/// infinities beyond +-448 give +-448 (0x7E / 0xFE); NaN gives 0x7F; the
/// sign is kept, so -0 and negative values that round to zero give 0x80.
inline uint8_t floatToE4M3(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint8_t sign = uint8_t((bits >> 24) & 0x80);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u)
    return 0x7F;
  const float a = bitsToFloat(abs);
  if (a >= 448.0f) // 448 or beyond (incl. inf): saturate
    return uint8_t(sign | 0x7E);
  if (a < 0x1p-6f) { // subnormal range: multiples of 2^-9
    float q = a * 512.0f; // exact (a power-of-two scaling), q < 8
    uint32_t i = uint32_t(q);
    float frac = q - float(i); // exact
    if (frac > 0.5f || (frac == 0.5f && (i & 1)))
      ++i; // i == 8 is 0x08, the smallest normal 2^-6
    return uint8_t(sign | i);
  }
  // Normal: keep 3 of float's 23 mantissa bits; a carry out of the mantissa
  // bumps the exponent, which is the right code. a < 448 never reaches 0x7F.
  const uint32_t exp = (abs >> 23) - 127 + 7; // 1 .. 15
  const uint32_t man = abs & 0x7FFFFFu;
  const uint32_t keep = man >> 20, rem = man & 0xFFFFFu;
  uint32_t code = exp << 3 | keep;
  if (rem > 0x80000u || (rem == 0x80000u && (keep & 1)))
    ++code;
  return uint8_t(sign | code);
}

/// The FP8 block scale of a block whose largest |w| is `amax`: amax / 448
/// (float32 division), so that the block's largest element maps to 448.
/// A block of zeros, or one whose amax / 448 underflows to 0 or is not
/// finite (a non-finite weight), gets scale 1.
inline float e4m3BlockScale(float amax) {
  float s = amax / 448.0f;
  return s > 0.0f && std::isfinite(s) ? s : 1.0f;
}

/// Quantizes one block row: `rows` (<= 128) rows of a float matrix [.., cols]
/// (row stride `ld`) into e4m3 codes [rows, cols] and the row of block
/// scales [ceil(cols/128)]: per 128x128 block (the last block column may be
/// narrower), scale = e4m3BlockScale(max |w|), code = floatToE4M3(w / scale),
/// so w ~ e4m3ToFloat(code) * scale. NaNs are ignored by the max.
inline void quantizeE4M3BlockRow(const float *src, int64_t ld, int64_t rows,
                                 int64_t cols, uint8_t *codes, float *scales) {
  for (int64_t c0 = 0, b = 0; c0 < cols; c0 += kFp8Block, ++b) {
    const int64_t c1 = c0 + kFp8Block < cols ? c0 + kFp8Block : cols;
    float amax = 0.0f;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = c0; c < c1; ++c) {
        float a = std::fabs(src[r * ld + c]);
        amax = a > amax ? a : amax;
      }
    const float scale = e4m3BlockScale(amax);
    scales[b] = scale;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = c0; c < c1; ++c)
        codes[r * cols + c] = floatToE4M3(src[r * ld + c] / scale);
  }
}

//===----------------------------------------------------------------------===//
// Deterministic random weights
//===----------------------------------------------------------------------===//

/// 64-bit FNV-1a of a NUL-terminated string.
inline uint64_t fnv1a64(const char *s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (; *s; ++s)
    h = (h ^ uint8_t(*s)) * 0x100000001B3ull;
  return h;
}

/// splitmix64's output function: a bijective mix of a 64-bit counter.
inline uint64_t splitmix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Fills elements [begin, end) of the random weight `w` for `seed`. Element
/// i is a function of (seed, name, i) only, so the result does not depend on
/// the order of the weights or on how the range is split over threads:
///   2-D             uniform(-a, a), a = sqrt(3 / cols) (variance 1 / cols)
///   1-D *norm.weight  1 + uniform(-0.1, 0.1)
///   other 1-D       uniform(-0.05, 0.05)   (e.g. e_score_correction_bias)
/// randomWeightRange writing element i to dst[i - begin] (a buffer of just
/// the range).
inline void randomWeightRangeTo(const WeightSpec &w, uint64_t seed,
                                int64_t begin, int64_t end, float *dst);

inline void randomWeightRange(const WeightSpec &w, uint64_t seed,
                              int64_t begin, int64_t end, float *dst) {
  randomWeightRangeTo(w, seed, begin, end, dst + begin);
}

inline void randomWeightRangeTo(const WeightSpec &w, uint64_t seed,
                                int64_t begin, int64_t end, float *dst) {
  double base = 0, a;
  if (w.rank == 2) {
    a = std::sqrt(3.0 / double(w.shape[1] > 0 ? w.shape[1] : 1));
  } else {
    size_t n = std::strlen(w.name);
    const char *suffix = "norm.weight"; // also matches *layernorm.weight
    bool norm = n >= 11 && std::strcmp(w.name + n - 11, suffix) == 0;
    base = norm ? 1.0 : 0.0;
    a = norm ? 0.1 : 0.05;
  }
  // splitmix64 is a counter-based generator: the i-th draw is the mix of
  // key + (i + 1) * golden gamma.
  const uint64_t key = splitmix64(seed) ^ fnv1a64(w.name);
  for (int64_t i = begin; i < end; ++i) {
    uint64_t z = splitmix64(key + uint64_t(i + 1) * 0x9E3779B97F4A7C15ull);
    double u = double(z >> 40) * 0x1p-24; // [0, 1), 24 bits
    dst[i - begin] = float(base + a * (2.0 * u - 1.0));
  }
}

} // namespace dsrt

#endif // DS_LIB_RUNTIME_CONVERT_H
