//===- ContextImpl.h - libdsrt's private per-run state ----------*- C++ -*-===//

#ifndef DS_LIB_RUNTIME_CONTEXTIMPL_H
#define DS_LIB_RUNTIME_CONTEXTIMPL_H

#include "ds/Runtime/Comm.h"
#include "ds/Runtime/Runtime.h"
// Complete type needed: Impl's inline constructor destroys `pool` on unwind.
#include "ThreadPool.h"

#include <memory>
#include <vector>

namespace dsrt {

/// cos/sin of every (position, pair) for one RopeSpec, YaRN applied; the HF
/// YaRN attention factor (yarn_get_mscale(factor, mscale) /
/// yarn_get_mscale(factor, mscale_all_dim)) is folded in.
struct RopeTable {
  int64_t dim = 0; // rotated dims; dim / 2 pairs
  int64_t positions = 0;
  std::vector<float> cos, sin; // [positions][dim / 2]
};

/// Builds the table for positions [0, positions).
RopeTable buildRopeTable(const RopeSpec &spec, int64_t positions);

struct Context::Impl {
  explicit Impl(const ModelSpec &spec) : spec(spec) {}

  const ModelSpec &spec;
  int threads = 1;
  std::unique_ptr<ThreadPool> pool;

  /// float32 copy of every weight kept in float; weights[i] points into
  /// storage[i] (null for a weight kept in FP8 or bf16).
  std::vector<std::vector<float>> storage;
  std::vector<const float *> weights;

  /// bf16 bits of every weight kept in bf16 (a 2-D kGemmOnly weight from a
  /// BF16 checkpoint tensor, or random for a BF16-declared one);
  /// bf16Weights[i] points into bf16[i], or is null.
  std::vector<std::vector<uint16_t>> bf16;
  std::vector<const uint16_t *> bf16Weights;

  /// A weight kept in FP8 (2-D WeightSpec with dtype F8E4M3): e4m3 codes
  /// [rows, cols] and block scales [ceil(rows/128), ceil(cols/128)].
  struct Fp8Storage {
    std::vector<uint8_t> codes;
    std::vector<float> scales;
    Fp8Weight view{nullptr, nullptr, 0, 0};
  };
  std::vector<Fp8Storage> fp8;               // one per weight (empty if float)
  std::vector<const Fp8Weight *> fp8Weights; // &fp8[i].view, or null

  /// The arena of the static memory plan (64-byte aligned).
  char *arena = nullptr;

  /// The paged latent KV cache (KVCache.cpp); null when the model has no
  /// cache layers.
  std::unique_ptr<KVCache> cache;

  /// Sequence slot of each token of the next program call
  /// (setTokenSequences); tokens past the end are in slot 0.
  std::vector<int32_t> tokenSequences;
  /// setOutputs / setArgmaxDone.
  Context::Outputs outputs;
  bool argmaxDone = false;

  std::vector<RopeTable> ropes; // one per spec.ropes entry

  /// The device mesh (setComm): world communicator (not owned), one
  /// communicator per MeshAxis over the ranks that share the other
  /// coordinates, and this rank's coordinates.
  Comm *world = nullptr;
  std::unique_ptr<Comm> axisComms[4];
  std::unique_ptr<Comm> expertGroup; // ep x dp (only when dp > 1)
  int coord[4] = {0, 0, 0, 0};

  /// State of a device backend (lib/Runtime/Cuda: weights, arena and cache
  /// on the GPU), created by ModelSpec::prepare; libdsrt never looks inside.
  std::shared_ptr<void> device;
};

} // namespace dsrt

#endif // DS_LIB_RUNTIME_CONTEXTIMPL_H
