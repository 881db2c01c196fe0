//===- HFConfigTest.cpp - config.json parsing -----------------------------===//

#include "ds/Target/HFConfig.h"

#include <gtest/gtest.h>

using namespace ds;

namespace {

std::optional<ModelConfig> parse(const std::string &json, std::string &err) {
  return parseHFConfig(json, err);
}

TEST(HFConfig, V3DefaultsFollowTransformers) {
  std::string err;
  auto c = parse(R"({"model_type": "deepseek_v3"})", err);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->hiddenSize, 7168);
  EXPECT_EQ(c->numLayers, 61);
  EXPECT_EQ(c->qLoraRank, 1536);
  EXPECT_EQ(c->routedExperts, 256);
  EXPECT_EQ(c->expertsPerToken, 8);
  EXPECT_EQ(c->nGroup, 8);
  EXPECT_EQ(c->topkGroup, 4);
  EXPECT_EQ(c->firstKDenseReplace, 3);
  EXPECT_EQ(c->scoringFunc, "sigmoid");
  EXPECT_EQ(c->topkMethod, "noaux_tc");
  EXPECT_TRUE(c->normTopkProb);
  EXPECT_DOUBLE_EQ(c->routedScalingFactor, 2.5);
  EXPECT_EQ(c->moeLayerFreq, 1);
  EXPECT_EQ(c->numNextnPredictLayers, 0);
  EXPECT_FALSE(c->yarn);
  EXPECT_FALSE(c->fp8Block);
}

TEST(HFConfig, V2WithoutExpertsIsDense) {
  std::string err;
  auto c = parse(R"({"model_type": "deepseek_v2", "q_lora_rank": null})", err);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->routedExperts, 0);
  EXPECT_EQ(c->qLoraRank, 0);
  EXPECT_FALSE(c->isMoELayer(5));
}

TEST(HFConfig, MoELayerSchedule) {
  std::string err;
  auto c = parse(R"({"model_type": "deepseek_v2", "n_routed_experts": 8,
                     "num_experts_per_tok": 2, "first_k_dense_replace": 1,
                     "moe_layer_freq": 2, "num_hidden_layers": 6})",
                 err);
  ASSERT_TRUE(c) << err;
  EXPECT_FALSE(c->isMoELayer(0));
  EXPECT_FALSE(c->isMoELayer(1));
  EXPECT_TRUE(c->isMoELayer(2));
  EXPECT_FALSE(c->isMoELayer(3));
  EXPECT_TRUE(c->isMoELayer(4));
}

TEST(HFConfig, YaRNAndQuantization) {
  std::string err;
  auto c = parse(R"({"model_type": "deepseek_v3",
      "rope_scaling": {"rope_type": "yarn", "factor": 40, "beta_fast": 32,
                       "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
                       "original_max_position_embeddings": 4096},
      "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
                              "weight_block_size": [128, 64]}})",
                 err);
  ASSERT_TRUE(c) << err;
  ASSERT_TRUE(c->yarn);
  EXPECT_DOUBLE_EQ(c->yarn->factor, 40.0);
  EXPECT_EQ(c->yarn->originalMaxPositionEmbeddings, 4096);
  ASSERT_TRUE(c->fp8Block);
  EXPECT_EQ(c->fp8Block->first, 128);
  EXPECT_EQ(c->fp8Block->second, 64);
}

struct BadCase {
  const char *json;
  const char *field; // the message must name it
};

class HFConfigErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(HFConfigErrors, NamesTheField) {
  std::string err;
  auto c = parse(GetParam().json, err);
  EXPECT_FALSE(c);
  EXPECT_NE(err.find(std::string("'") + GetParam().field + "'"),
            std::string::npos)
      << err;
}

INSTANTIATE_TEST_SUITE_P(
    All, HFConfigErrors,
    ::testing::Values(
        BadCase{R"({})", "model_type"},
        BadCase{R"({"model_type": "llama"})", "model_type"},
        BadCase{R"({"model_type": "deepseek_v3", "hidden_size": "big"})",
                "hidden_size"},
        BadCase{R"({"model_type": "deepseek_v3", "hidden_size": 0})",
                "hidden_size"},
        BadCase{R"({"model_type": "deepseek_v3", "scoring_func": "relu"})",
                "scoring_func"},
        BadCase{R"({"model_type": "deepseek_v3", "topk_method": "best"})",
                "topk_method"},
        BadCase{R"({"model_type": "deepseek_v3", "n_group": 7})", "n_group"},
        BadCase{R"({"model_type": "deepseek_v3", "topk_group": 9})",
                "topk_group"},
        BadCase{R"({"model_type": "deepseek_v3", "num_experts_per_tok": 300})",
                "num_experts_per_tok"},
        BadCase{R"({"model_type": "deepseek_v3", "qk_rope_head_dim": 63})",
                "qk_rope_head_dim"},
        BadCase{R"({"model_type": "deepseek_v2", "n_routed_experts": 8})",
                "num_experts_per_tok"},
        BadCase{R"({"model_type": "deepseek_v3",
                    "rope_scaling": {"type": "linear", "factor": 2}})",
                "rope_scaling"},
        BadCase{R"({"model_type": "deepseek_v3",
                    "quantization_config": {"quant_method": "gptq"}})",
                "quantization_config"},
        BadCase{R"({"model_type": "deepseek_v3", "hidden_act": "gelu"})",
                "hidden_act"},
        BadCase{R"({"model_type": "deepseek_v3", "torch_dtype": "int8"})",
                "torch_dtype"}),
    [](const ::testing::TestParamInfo<BadCase> &info) {
      return std::to_string(info.index) + "_" + info.param.field;
    });

TEST(HFConfig, MalformedJSON) {
  std::string err;
  EXPECT_FALSE(parse("{\"model_type\": ", err));
  EXPECT_NE(err.find("invalid JSON"), std::string::npos) << err;
  EXPECT_FALSE(parse("[1, 2]", err));
  EXPECT_NE(err.find("not a JSON object"), std::string::npos) << err;
}

} // namespace
