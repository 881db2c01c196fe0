// A kernel-level module for quantize.mlir: a linear_pair whose second
// weight is also read by a non-GEMM kernel (so it stays f32).
module {
  ds.weight @a.q_proj.weight : tensor<16x16xf32>
  ds.weight @a.kv_a_proj_with_mqa.weight : tensor<16x16xf32>
  func.func @decode(%ids: memref<?xi32>, %pos: memref<?xi32>, %x: memref<?x16xf32>, %q: memref<?x16xf32>, %kv: memref<?x16xf32>, %e: memref<?x16xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    dsk.linear_pair %x, %q, %kv {weight_a = @a.q_proj.weight, weight_b = @a.kv_a_proj_with_mqa.weight} : memref<?x16xf32>, memref<?x16xf32>, memref<?x16xf32>
    dsk.embedding %ids, %e {weight = @a.kv_a_proj_with_mqa.weight} : memref<?xi32>, memref<?x16xf32>
    return
  }
}
