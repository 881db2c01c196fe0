//===- DialectTest.cpp - building and verifying ds models -----------------===//

#include "ds/Dialect/DS/IR/DSOps.h"
#include "ds/Target/HFConfig.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"

#include <gtest/gtest.h>

using namespace mlir;
using namespace ds;

namespace {

ModelConfig tinyConfig() {
  std::string err;
  auto c = parseHFConfig(R"({"model_type": "deepseek_v3", "vocab_size": 64,
      "hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16,
      "num_hidden_layers": 2, "num_attention_heads": 2, "q_lora_rank": 16,
      "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4,
      "v_head_dim": 8, "n_routed_experts": 8, "n_shared_experts": 1,
      "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2,
      "first_k_dense_replace": 1, "num_nextn_predict_layers": 1})",
                         err);
  EXPECT_TRUE(c) << err;
  return *c;
}

TEST(Dialect, BuiltModelVerifiesAndListsWeights) {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> module = buildModel(tinyConfig(), &ctx);
  ASSERT_TRUE(succeeded(verify(*module)));

  // Every weight an op reads is declared, and the MoE layer reads its
  // router, bias, 8 experts x 3 projections and the shared expert.
  int moeWeights = 0;
  module->walk([&](MoEOp op) {
    SmallVector<WeightUse> uses;
    op.getWeightUses(uses);
    moeWeights += uses.size();
  });
  EXPECT_EQ(moeWeights, 2 * (2 + 8 * 3 + 3)); // layer 1 and the MTP layer
}

TEST(Dialect, WrongWeightShapeIsDiagnosed) {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> module = buildModel(tinyConfig(), &ctx);
  SymbolTable symbols(*module);
  auto w = symbols.lookup<WeightOp>("model.layers.0.self_attn.kv_b_proj.weight");
  ASSERT_TRUE(w);
  w.setType(RankedTensorType::get({7, 16}, BFloat16Type::get(&ctx)));

  std::string message;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &diag) {
    message = diag.str();
    return success();
  });
  EXPECT_TRUE(failed(verify(*module)));
  EXPECT_NE(message.find("kv_b_proj.weight' has shape [7, 16]"),
            std::string::npos)
      << message;
}

TEST(Dialect, MoEConfigRejectsBadGroups) {
  MLIRContext ctx;
  ctx.loadDialect<DSDialect>();
  std::string message;
  auto emit = [&]() {
    return emitError(UnknownLoc::get(&ctx));
  };
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &diag) {
    message = diag.str();
    return success();
  });
  EXPECT_TRUE(failed(MoEConfigAttr::verify(
      emit, /*experts=*/16, 1, /*top_k=*/4, 32, ScoringFunc::sigmoid,
      TopkMethod::noaux_tc, /*n_group=*/3, 2, true, llvm::APFloat(1.0))));
  EXPECT_NE(message.find("divisible by n_group"), std::string::npos) << message;
  EXPECT_TRUE(succeeded(MoEConfigAttr::verify(
      emit, 16, 1, 4, 32, ScoringFunc::sigmoid, TopkMethod::noaux_tc, 4, 2,
      true, llvm::APFloat(1.0))));
}

} // namespace
