//===- HFConfig.h - import a Hugging Face config.json -----------*- C++ -*-===//
//
// Reads the config.json of a DeepSeek-V2/V3 checkpoint (model_type
// deepseek_v2 / deepseek_v3) into a ModelConfig, and builds the ds model
// module for it: one ds.weight per checkpoint tensor, named and shaped as
// published, and @forward / @mtp_<k> functions.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TARGET_HFCONFIG_H
#define DS_TARGET_HFCONFIG_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace ds {

/// Everything in config.json that changes the computation.
struct ModelConfig {
  std::string modelType; // deepseek_v2 | deepseek_v3
  int64_t vocabSize = 0, hiddenSize = 0, intermediateSize = 0;
  int64_t numLayers = 0, numHeads = 0;
  // MLA.
  int64_t qLoraRank = 0; // 0: no q LoRA (q_lora_rank: null)
  int64_t kvLoraRank = 0, qkNopeHeadDim = 0, qkRopeHeadDim = 0, vHeadDim = 0;
  // MoE (routedExperts == 0: every layer is dense).
  int64_t routedExperts = 0, sharedExperts = 0, expertsPerToken = 0;
  int64_t moeIntermediateSize = 0, nGroup = 1, topkGroup = 1;
  int64_t firstKDenseReplace = 0, moeLayerFreq = 1;
  std::string scoringFunc, topkMethod;
  bool normTopkProb = false;
  double routedScalingFactor = 1.0;
  // RoPE.
  double ropeTheta = 10000.0;
  struct YaRN {
    double factor, betaFast, betaSlow, mscale, mscaleAllDim;
    int64_t originalMaxPositionEmbeddings;
  };
  std::optional<YaRN> yarn;
  double rmsNormEps = 1e-6;
  bool tieWordEmbeddings = false;
  int64_t numNextnPredictLayers = 0;
  std::string torchDtype = "bfloat16";
  /// FP8 block size [rows, cols] when quantization_config is present.
  std::optional<std::pair<int64_t, int64_t>> fp8Block;

  bool isMoELayer(int64_t layer) const {
    return routedExperts > 0 && layer >= firstKDenseReplace &&
           layer % moeLayerFreq == 0;
  }
};

/// Parses and validates a config.json text. On failure returns std::nullopt
/// and sets `error` to a message naming the offending field.
std::optional<ModelConfig> parseHFConfig(llvm::StringRef json,
                                         std::string &error);

/// Builds the ds model for a validated config. Ops are located by their
/// checkpoint names (NameLoc); given the config's file name and text, within
/// the file at the field that sizes the op (num_attention_heads for ds.mla,
/// n_routed_experts for ds.moe, num_hidden_layers for @forward, ...).
mlir::OwningOpRef<mlir::ModuleOp> buildModel(const ModelConfig &config,
                                             mlir::MLIRContext *context,
                                             llvm::StringRef file = {},
                                             llvm::StringRef json = {});

/// Reads `path` (a config.json, or a directory holding one) and builds the
/// model. On failure returns null and sets `error` (naming file and field).
mlir::OwningOpRef<mlir::ModuleOp> importHFConfig(llvm::StringRef path,
                                                 mlir::MLIRContext *context,
                                                 std::string &error);

} // namespace ds

#endif // DS_TARGET_HFCONFIG_H
