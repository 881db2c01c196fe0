// A kernel-level module for quantize.mlir: a linear_pair whose second
// weight is also read by a non-GEMM kernel (so it stays f32), and routed
// experts whose fused shared expert's down projection is read likewise.
module {
  ds.weight @a.q_proj.weight : tensor<16x16xf32>
  ds.weight @a.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  ds.weight @m.experts.0.gate_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.0.up_proj.weight : tensor<4x16xf32>
  ds.weight @m.experts.0.down_proj.weight : tensor<16x4xf32>
  ds.weight @m.shared_experts.gate_proj.weight : tensor<8x16xf32>
  ds.weight @m.shared_experts.up_proj.weight : tensor<8x16xf32>
  ds.weight @m.shared_experts.down_proj.weight : tensor<16x8xf32>
  func.func @decode(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x16xf32>, %q: memref<?x16xf32>, %kv: memref<?x16xf32>, %e: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    dsk.linear_pair %x, %q, %kv {weight_a = @a.q_proj.weight, weight_b = @a.kv_a_proj_with_mqa.weight} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.embedding %ids, %e {weight = @a.kv_a_proj_with_mqa.weight} : memref<?xi32>, memref<?x16xf32>
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %i = memref.alloc(%n) : memref<?x1xi32>
    %w = memref.alloc(%n) : memref<?x1xf32>
    %h = memref.alloc(%n) : memref<?x8xf32>
    dsk.moe_experts %x, %i, %w, %e, %h {prefix = "m", experts = 1 : i64, inter = 4 : i64, shared_gate = @m.shared_experts.gate_proj.weight, shared_up = @m.shared_experts.up_proj.weight, shared_down = @m.shared_experts.down_proj.weight} : memref<?x16xf32>, memref<?x1xi32>, memref<?x1xf32>, memref<?x16xf32>, memref<?x8xf32>
    dsk.embedding %ids, %h {weight = @m.shared_experts.down_proj.weight} : memref<?xi32>, memref<?x8xf32>
    return
  }
}
