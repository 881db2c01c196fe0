// The published configs; expected values computed by hand from config.json
// (see docs/README.md for the formulas): DeepSeek-V3 is 671.0e9 total, 37.6e9
// active, 70272 latent-cache bytes per token.
// RUN: ds-translate --import-hf-config %ds_src_root/models/configs/deepseek-v3.json | ds-opt --ds-model-stats | FileCheck %s --check-prefix=V3 --match-full-lines
// RUN: ds-translate --import-hf-config %ds_src_root/models/configs/moonlight-16b-a3b.json | ds-opt --ds-model-stats | FileCheck %s --check-prefix=MOONLIGHT --match-full-lines
// RUN: ds-translate --import-hf-config %ds_src_root/models/configs/deepseek-v2-lite.json | ds-opt --ds-model-stats | FileCheck %s --check-prefix=V2LITE --match-full-lines
// RUN: ds-opt --ds-model-stats %ds_src_root/models/tiny.mlir | FileCheck %s --check-prefix=TINY --match-full-lines
// RUN: ds-opt --ds-model-stats --split-input-file %s | FileCheck %s --check-prefix=SMALL --match-full-lines
// Exactly four lines, nothing else on stdout.
// RUN: ds-opt --ds-model-stats %ds_src_root/models/tiny.mlir | count 4
// With -o, the module is still written.
// RUN: ds-opt --ds-model-stats %ds_src_root/models/tiny.mlir -o %t.mlir | FileCheck %s --check-prefix=TINY
// RUN: FileCheck %s --check-prefix=IR < %t.mlir
// IR: func.func @forward

// V3:      params.total: 671026419200
// V3-NEXT: params.active: 37552297472
// V3-NEXT: params.mtp: 13463426304
// V3-NEXT: kv_cache.bytes_per_token: 70272

// MOONLIGHT:      params.total: 15960110208
// MOONLIGHT-NEXT: params.active: 2914776192
// MOONLIGHT-NEXT: params.mtp: 0
// MOONLIGHT-NEXT: kv_cache.bytes_per_token: 31104

// V2LITE:      params.total: 15706484224
// V2LITE-NEXT: params.active: 2661150208
// V2LITE-NEXT: params.mtp: 0
// V2LITE-NEXT: kv_cache.bytes_per_token: 31104

// TINY:      params.total: 414880
// TINY-NEXT: params.active: 267424
// TINY-NEXT: params.mtp: 261008
// TINY-NEXT: kv_cache.bytes_per_token: 240

// An MTP module that shares the main model's embedding and head: shared
// weights count once, as main-model; unused weights and FP8 scales not at all.
// main: emb 32*16 + head 32*16 + norm 16 = 1040; mtp: 3 norms * 16 + eh_proj 16*32 = 560.
// SMALL:      params.total: 1040
// SMALL-NEXT: params.active: 1040
// SMALL-NEXT: params.mtp: 560
// SMALL-NEXT: kv_cache.bytes_per_token: 0
module {
  ds.weight @emb : tensor<32x16xbf16>
  ds.weight @head : tensor<32x16xbf16>
  ds.weight @norm : tensor<16xbf16>
  ds.weight @unused : tensor<1000xbf16>
  ds.weight @mtp.enorm.weight : tensor<16xbf16>
  ds.weight @mtp.hnorm.weight : tensor<16xbf16>
  ds.weight @mtp.eh_proj.weight : tensor<16x32xbf16>
  ds.weight @mtp.shared_head.norm.weight : tensor<16xbf16>
  func.func @forward(%ids: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %x = ds.embedding %ids, @emb : (tensor<?xi32>) -> tensor<?x16xf32>
    %h = ds.rms_norm %x, @norm : tensor<?x16xf32>
    %l = ds.lm_head %h, @head : (tensor<?x16xf32>) -> tensor<?x32xf32>
    return %l, %h : tensor<?x32xf32>, tensor<?x16xf32>
  }
  func.func @mtp_1(%h: tensor<?x16xf32>, %ids: tensor<?xi32>, %pos: tensor<?xi32>) -> (tensor<?x32xf32>, tensor<?x16xf32>) {
    %logits, %y = ds.mtp %h, %ids, %pos {prefix = "mtp", config = #ds.mtp<depth = 1>, embed = @emb, head = @head}
        : tensor<?x16xf32>, tensor<?xi32>, tensor<?xi32> -> tensor<?x32xf32>, tensor<?x16xf32> {
    ^bb0(%x: tensor<?x16xf32>, %p: tensor<?xi32>):
      ds.yield %x : tensor<?x16xf32>
    }
    return %logits, %y : tensor<?x32xf32>, tensor<?x16xf32>
  }
}
