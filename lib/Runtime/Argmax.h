//===- Argmax.h - greedy choice over a logits row --------------*- C++ -*-===//

#ifndef DS_LIB_RUNTIME_ARGMAX_H
#define DS_LIB_RUNTIME_ARGMAX_H

#include <cstdint>

namespace dsrt {

/// Index of the largest value; the lowest index wins ties (NaN never wins
/// past index 0). The CUDA backend's argmax kernel follows the same rule.
inline int32_t argmaxRow(const float *row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (row[i] > row[best])
      best = i;
  return int32_t(best);
}

} // namespace dsrt

#endif // DS_LIB_RUNTIME_ARGMAX_H
