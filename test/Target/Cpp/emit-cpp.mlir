// The planned kernel level of models/tiny.mlir as C++: tables, the two
// programs as kernel calls in launch order, the ModelSpec and main.
// RUN: ds-opt --ds-lower-to-kernels="max-seq-len=64" --dsk-plan-memory %ds_src_root/models/tiny.mlir -o %t.mlir
// RUN: ds-translate --emit-cpp %t.mlir -o %t.cpp
// RUN: FileCheck %s < %t.cpp
// The output compiles against the runtime header.
// RUN: c++ -std=c++17 -fsyntax-only -I %ds_src_root/include %t.cpp
// Fused kernels and FP8: one call per fused group, FP8 GEMMs quantize their
// activations, and only weights that GEMMs alone read are kept in FP8
// (kv_b_proj, read by absorbed attention, is dequantized on load).
// RUN: ds-opt --ds-lower-to-kernels="max-seq-len=64" --dsk-fuse --dsk-quantize --dsk-plan-memory %ds_src_root/models/tiny.mlir -o %t.fp8.mlir
// RUN: ds-translate --emit-cpp %t.fp8.mlir | FileCheck %s --check-prefix=FUSED
// RUN: ds-translate --emit-cpp %t.fp8.mlir -o %t.fp8.cpp
// RUN: c++ -std=c++17 -fsyntax-only -I %ds_src_root/include %t.fp8.cpp
// Pipeline stages and data-parallel replicas (pp 2 x dp 2): one body per
// stage program, sends and receives of the residual rows between them, and
// prefill/decode/mtp as wrappers over this rank's part.
// RUN: sed 's/^module {/module attributes {ds.plan = #ds.plan<tp = 1, ep = 1, pp = 2, dp = 2>} {/' %ds_src_root/models/tiny.mlir > %t.pp.in.mlir
// RUN: ds-opt --ds-partition-dp --ds-partition-pp --ds-lower-to-kernels="max-seq-len=64" --dsk-plan-memory %t.pp.in.mlir -o %t.pp.mlir
// RUN: ds-translate --emit-cpp %t.pp.mlir -o %t.pp.cpp
// RUN: FileCheck %s --check-prefix=PART < %t.pp.cpp
// RUN: c++ -std=c++17 -fsyntax-only -I %ds_src_root/include %t.pp.cpp
// Errors: a module that was not lowered, or not planned.
// RUN: not ds-translate --emit-cpp %ds_src_root/models/tiny.mlir -o %t.bad.cpp 2>&1 | FileCheck %s --check-prefix=NOTLOWERED
// RUN: ds-opt --ds-lower-to-kernels %ds_src_root/models/tiny.mlir -o %t.unplanned.mlir
// RUN: not ds-translate --emit-cpp %t.unplanned.mlir -o %t.bad.cpp 2>&1 | FileCheck %s --check-prefix=UNPLANNED
// RUN: not test -e %t.bad.cpp

// Weights only GEMMs read are marked kGemmOnly (the runtime may keep them in
// bf16); the embedding, norms and kv_b_proj (absorbed attention) are not.
// CHECK: #include "ds/Runtime/Runtime.h"
// CHECK: const dsrt::WeightSpec kWeights[] = {
// CHECK-NEXT: {"model.embed_tokens.weight", 2, {1024, 64}, dsrt::DType::BF16},
// CHECK-NEXT: {"model.layers.0.input_layernorm.weight", 1, {64, 0}, dsrt::DType::BF16},
// CHECK-NEXT: {"model.layers.0.mlp.down_proj.weight", 2, {64, 128}, dsrt::DType::BF16, dsrt::WeightSpec::kGemmOnly},
// CHECK: {"model.layers.0.self_attn.kv_b_proj.weight", 2, {128, 32}, dsrt::DType::BF16},
// CHECK: {"model.layers.1.mlp.gate.e_score_correction_bias", 1, {16, 0}, dsrt::DType::F32},
// CHECK: const dsrt::RopeSpec kRopes[] = {
// CHECK-NEXT: {8, 10000.0, true, 4.0, 128, 32.0, 1.0, 1.0, 1.0},
// CHECK-NEXT: };
// CHECK: void prefill(dsrt::Context &ctx, const int32_t *ids, const int32_t *pos, int64_t n, float *logits, float *hidden) {
// CHECK-NEXT: char *arena = ctx.arena();
// CHECK: dsrt::cpu::embedding(ctx, ctx.weight(0), 1024, 64, ids, n, [[X:b[0-9]+]], 64);
// CHECK: dsrt::cpu::rmsNorm(ctx, [[X]], 64, ctx.weight({{[0-9]+}}), n, 64, 9.9999999999999995e-07,
// Column slices of the kv_a output: the latent (columns 0..31) and the rope key (32..39).
// CHECK: dsrt::cpu::linearW(ctx, {{b[0-9]+}}, 64, n, 64, {{[0-9]+}}, 40, [[KVA:b[0-9]+]], 40, dsrt::ActQuant::None);
// CHECK: dsrt::cpu::rmsNorm(ctx, ([[KVA]] + 0), 40, ctx.weight({{[0-9]+}}), n, 32,
// CHECK: dsrt::cpu::rope(ctx, {{b[0-9]+}}, 96, n, 4, 24, 16, pos, 0);
// CHECK: dsrt::cpu::rope(ctx, ([[KVA]] + 32), 40, n, 1, 8, 0, pos, 0);
// CHECK: dsrt::cpu::kvCacheWrite(ctx, 0, {{b[0-9]+}}, 32, ([[KVA]] + 32), 40, pos, n);
// CHECK: dsrt::cpu::mlaAttentionNaive(ctx, {{.+}}, n, 4, 16, 8, 16, 0.26464225796422675,
// CHECK: static const dsrt::MoERouting route{{[0-9]+}} = {16, 4, 4, 2, dsrt::MoERouting::Sigmoid, dsrt::MoERouting::NoauxTC, true, 2.5};
// CHECK: dsrt::cpu::moeRoute(
// CHECK: static const int64_t e{{[0-9]+}}gate[16] = {{{[0-9]+}}, {{[0-9]+}},
// CHECK: dsrt::cpu::moeExpertsW(ctx, {{.+}}, n, 64, 32, {{.+}}, 4, e{{[0-9]+}}gate, e{{[0-9]+}}up, e{{[0-9]+}}down, 16, {{.+}}, dsrt::ActQuant::None);
// CHECK: dsrt::cpu::rmsNorm(ctx, {{.+}}, hidden, 64);
// The lm_head writes the program's logits: logitsW, which computes only
// the rows the caller reads.
// CHECK-NOT: logits,
// CHECK: dsrt::cpu::logitsW(ctx, hidden, 64, n, 64, {{[0-9]+}}, 1024, logits, 1024, dsrt::ActQuant::None);
// CHECK: void decode(
// CHECK-NOT: mlaAttentionNaive
// CHECK: dsrt::cpu::mlaAttentionAbsorbed(ctx, 0, {{b[0-9]+}}, 96, ctx.weight({{[0-9]+}}), pos, n, 4, 16, 8, 16, 0.26464225796422675,
// CHECK: void mtp(dsrt::Context &ctx, const float *hiddenIn, const int32_t *ids, const int32_t *pos, int64_t n, float *logits, float *hidden) {
// CHECK: dsrt::cpu::rmsNorm(ctx, const_cast<float *>(hiddenIn), 64, ctx.weight({{[0-9]+}}), n, 64, {{.+}}, ({{b[0-9]+}} + 64), 128);
// CHECK: dsrt::cpu::mlaAttentionAbsorbed(ctx, 3,
// CHECK: static const dsrt::ModelSpec kModel = {
// CHECK: /*cacheLayers=*/4, /*kvLoraRank=*/32, /*qkRopeDim=*/8,
// CHECK-NEXT: /*maxSeqLen=*/64,
// CHECK: prefill, 64,
// CHECK-NEXT: decode, 2,
// CHECK-NEXT: mtp, 64,
// CHECK: int main(int argc, char **argv) { return dsrt::runMain(argc, argv, kModel); }

// NOTLOWERED: error: emit-cpp: not a kernel-level module (run ds-lower-to-kernels and dsk-plan-memory first)
// UNPLANNED: error: 'func.func' op emit-cpp: program has no memory plan (run dsk-plan-memory)

// The add + norm after the attention rides with o_proj (FP8): the norm
// weight is read through ctx.weight(), no GEMM weight.
// FUSED: {"model.layers.0.post_attention_layernorm.weight", 1, {64, 0}, dsrt::DType::BF16},{{$}}
// FUSED: {"model.layers.0.self_attn.kv_b_proj.weight", 2, {128, 32}, dsrt::DType::BF16},
// FUSED: {"model.layers.0.self_attn.q_a_proj.weight", 2, {32, 64}, dsrt::DType::F8E4M3, dsrt::WeightSpec::kGemmOnly},
// FUSED: {"model.layers.1.mlp.gate.weight", 2, {16, 64}, dsrt::DType::BF16},
// The final norm's weight, read by the last experts' epilogue, is no GEMM
// weight: kept in float32 for ctx.weight().
// FUSED: {"model.norm.weight", 1, {64, 0}, dsrt::DType::BF16},{{$}}
// FUSED: void prefill(
// FUSED: dsrt::cpu::linearPairW(ctx, {{b[0-9]+}}, 64, n, 64, {{[0-9]+}}, 32, {{b[0-9]+}}, 32, {{[0-9]+}}, 40, {{b[0-9]+}}, 40, dsrt::ActQuant::Fp8);
// FUSED: dsrt::cpu::qkRopeCacheWrite(ctx, 0, {{b[0-9]+}}, 96, 4, 24, 16, {{.+}}, pos, n, 0, nullptr, 0.0);
// FUSED: dsrt::cpu::linearW(ctx, {{.+}}, 128, {{b[0-9]+}}, 128, dsrt::ActQuant::None);
// FUSED: dsrt::cpu::mlaAttentionNaive(
// FUSED: dsrt::cpu::linearNormW(ctx, {{b[0-9]+}}, 64, n, 64, {{[0-9]+}}, 64, {{b[0-9]+}}, 64, dsrt::AddNorm{{[{]b[0-9]+}}, 64, ctx.weight({{[0-9]+}}), 9.9999999999999995e-07, {{b[0-9]+}}, 64, {{b[0-9]+}}, 64}, dsrt::ActQuant::Fp8);
// FUSED: dsrt::cpu::gatedUp(ctx, {{.+}}, n, 64, {{[0-9]+}}, {{[0-9]+}}, 128, {{.+}}, dsrt::ActQuant::Fp8);
// The dense MLP's down projection takes the next layer's add + norm.
// FUSED-NOT: dsrt::cpu::
// FUSED: dsrt::cpu::linearNormW(ctx, {{b[0-9]+}}, 128, n, 128, {{[0-9]+}}, 64, {{b[0-9]+}}, 64, dsrt::AddNorm{
// FUSED: dsrt::cpu::moeGate(ctx, {{.+}}, n, 64, {{[0-9]+}}, ctx.weight({{[0-9]+}}), route{{[0-9]+}},
// The next layer's add + norm rides with the experts; the last layer's
// writes the hidden states.
// FUSED: dsrt::cpu::moeExpertsSharedNormW(ctx, {{.+}}, 16, dsrt::SharedExpert{{[{][0-9]+}}, {{[0-9]+}}, {{[0-9]+}}, 32, {{b[0-9]+}}, 32}, {{b[0-9]+}}, 64, dsrt::AddNorm{{[{]b[0-9]+}}, 64, ctx.weight({{[0-9]+}}), 9.9999999999999995e-07, {{b[0-9]+}}, 64, {{b[0-9]+}}, 64}, dsrt::ActQuant::Fp8);
// FUSED: dsrt::cpu::moeExpertsSharedNormW(ctx, {{.+}}, dsrt::AddNorm{{[{]b[0-9]+}}, 64, ctx.weight({{[0-9]+}}), 9.9999999999999995e-07, {{b[0-9]+}}, 64, hidden, 64}, dsrt::ActQuant::Fp8);
// FUSED: void decode(
// Decode's prologue rides in its attention.
// FUSED: dsrt::cpu::mlaAttentionAbsorbedRope(ctx, 0, {{b[0-9]+}}, 96, ctx.weight({{[0-9]+}}), pos, n, 4, 16, 8, 16, 0.26464225796422675, {{b[0-9]+}}, 64, ([[KV:b[0-9]+]] + 0), 40, ([[KV]] + 32), 40, 0, ctx.weight({{[0-9]+}}), 9.9999999999999995e-07);

// PART: void prefill_stage0_body(dsrt::Context &ctx, const int32_t *ids, const int32_t *pos, int64_t n, float *logits, float *hidden) {
// PART: dsrt::cpu::embedding(
// PART: dsrt::cpu::sendRows(ctx, dsrt::MeshAxis::PP, {{b[0-9]+}}, 64, n, 64, 1);
// PART-NEXT: }
// PART: void prefill_stage1_body(
// PART-NEXT: char *arena = ctx.arena();
// PART-NEXT: float *[[IN:b[0-9]+]] =
// PART-NEXT: dsrt::cpu::recvRows(ctx, dsrt::MeshAxis::PP, [[IN]], 64, n, 64, 0);
// PART: void mtp_stage1_body(dsrt::Context &ctx, const float *hiddenIn,
// PART: void prefill(dsrt::Context &ctx, const int32_t *ids, const int32_t *pos, int64_t n, float *logits, float *hidden) {
// PART-NEXT: static const dsrt::ProgramFn kStages[] = {prefill_stage0_body, prefill_stage1_body};
// PART-NEXT: dsrt::runPartitioned(ctx, kStages, ids, pos, n, logits, hidden);
// PART: void decode(
// PART-NEXT: static const dsrt::ProgramFn kStages[] = {decode_stage0_body, decode_stage1_body};
// PART: void mtp(dsrt::Context &ctx, const float *hiddenIn, const int32_t *ids, const int32_t *pos, int64_t n, float *logits, float *hidden) {
// PART-NEXT: dsrt::runPartitionedMtp(ctx, mtp_stage1_body, hiddenIn, ids, pos, n, logits, hidden);
// PART: /*mesh=*/{1, 1, 2, 2},
// PART: int main(int argc, char **argv) { return dsrt::runMainMpi(argc, argv, kModel); }
