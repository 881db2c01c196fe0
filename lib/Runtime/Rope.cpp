//===- Rope.cpp - RoPE cos/sin tables, YaRN included ---------------------===//
//
// Follows DeepSeek-V3 inference/model.py precompute_freqs_cis, and HF's
// DeepseekV3YarnRotaryEmbedding for the cos/sin attention factor.
//
//===----------------------------------------------------------------------===//

#include "ContextImpl.h"

#include <algorithm>
#include <cmath>

namespace dsrt {

// HF yarn_get_mscale.
static double yarnMscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// The (fractional) dim index whose wavelength makes `rotations` turns over
// the original context.
static double correctionDim(double rotations, double dim, double base,
                            double original) {
  return dim * std::log(original / (rotations * 2.0 * M_PI)) /
         (2.0 * std::log(base));
}

RopeTable buildRopeTable(const RopeSpec &spec, int64_t positions) {
  RopeTable t;
  t.dim = spec.dim;
  t.positions = positions;
  const int64_t half = spec.dim / 2;
  const double dim = static_cast<double>(spec.dim);

  std::vector<double> freqs(half);
  for (int64_t j = 0; j < half; ++j)
    freqs[j] = 1.0 / std::pow(spec.theta, static_cast<double>(2 * j) / dim);

  double attentionFactor = 1.0;
  // The reference applies YaRN only when max_seq_len > original_seq_len; we
  // follow HF and apply it whenever the config asks for it, so the logits do
  // not depend on --max-seq-len.
  if (spec.yarn) {
    double orig = static_cast<double>(spec.originalMaxPositionEmbeddings);
    double low = std::max(
        std::floor(correctionDim(spec.betaFast, dim, spec.theta, orig)), 0.0);
    double high =
        std::min(std::ceil(correctionDim(spec.betaSlow, dim, spec.theta, orig)),
                 dim - 1.0);
    if (low == high)
      high += 0.001; // as the reference: avoid a zero-width ramp
    for (int64_t j = 0; j < half; ++j) {
      double ramp = std::clamp((j - low) / (high - low), 0.0, 1.0);
      double smooth = 1.0 - ramp;
      // Low-index (fast) dims keep their frequency (extrapolate), slow ones
      // are divided by the factor (interpolate), with a ramp in between.
      freqs[j] = freqs[j] / spec.factor * (1.0 - smooth) + freqs[j] * smooth;
    }
    attentionFactor = yarnMscale(spec.factor, spec.mscale) /
                      yarnMscale(spec.factor, spec.mscaleAllDim);
  }

  // Angles in double: float32 pos * freq loses ~1e-4 rad at long positions.
  t.cos.resize(static_cast<size_t>(positions * half));
  t.sin.resize(static_cast<size_t>(positions * half));
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t j = 0; j < half; ++j) {
      double angle = static_cast<double>(p) * freqs[j];
      t.cos[p * half + j] =
          static_cast<float>(std::cos(angle) * attentionFactor);
      t.sin[p * half + j] =
          static_cast<float>(std::sin(angle) * attentionFactor);
    }
  }
  return t;
}

} // namespace dsrt
