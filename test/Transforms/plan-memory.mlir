// RUN: ds-opt --split-input-file --verify-diagnostics --dsk-plan-memory %s | FileCheck %s

// Three [tokens, 16] f32 buffers of 4 * 16 * 4 = 256 bytes, in launch order
// a: [alloc, rms_norm #1], b: [alloc, rms_norm #2], c: [alloc, linear].
// b overlaps a, so it goes above it; c overlaps only b, so it reuses a's slot.
// CHECK-LABEL: func.func @prefill
// CHECK-SAME: dsk.program = #dsk.program<kind = prefill, max_tokens = 4, arena_bytes = 512>
// CHECK: %[[ARENA:.+]] = dsk.arena : memref<512xi8>
// CHECK: memref.dim
// CHECK-NEXT: %[[OA:.+]] = arith.constant 0 : index
// CHECK-NEXT: %[[A:.+]] = memref.view %[[ARENA]][%[[OA]]][%{{.+}}] : memref<512xi8> to memref<?x16xf32>
// CHECK-NEXT: dsk.embedding %{{.+}}, %[[A]]
// CHECK-NEXT: %[[OB:.+]] = arith.constant 256 : index
// CHECK-NEXT: %[[B:.+]] = memref.view %[[ARENA]][%[[OB]]][%{{.+}}] : memref<512xi8> to memref<?x16xf32>
// CHECK-NEXT: dsk.rms_norm %[[A]], %[[B]]
// CHECK-NEXT: %[[OC:.+]] = arith.constant 0 : index
// CHECK-NEXT: %[[C:.+]] = memref.view %[[ARENA]][%[[OC]]][%{{.+}}] : memref<512xi8> to memref<?x16xf32>
// CHECK-NEXT: dsk.rms_norm %[[B]], %[[C]]
// CHECK-NOT: memref.alloc
// CHECK-NOT: memref.dealloc
module {
  ds.weight @emb : tensor<32x16xf32>
  ds.weight @norm : tensor<16xf32>
  ds.weight @head : tensor<8x16xf32>
  func.func @prefill(%ids: memref<?xi32>, %pos: memref<?xi32>, %logits: memref<?x8xf32>) attributes {dsk.program = #dsk.program<kind = prefill, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %a = memref.alloc(%n) : memref<?x16xf32>
    dsk.embedding %ids, %a {weight = @emb} : memref<?xi32>, memref<?x16xf32>
    %b = memref.alloc(%n) : memref<?x16xf32>
    dsk.rms_norm %a, %b {eps = 1.0e-6 : f64, weight = @norm} : memref<?x16xf32>, memref<?x16xf32>
    %c = memref.alloc(%n) : memref<?x16xf32>
    dsk.rms_norm %b, %c {eps = 1.0e-6 : f64, weight = @norm} : memref<?x16xf32>, memref<?x16xf32>
    dsk.linear %c, %logits {weight = @head} : memref<?x16xf32>, memref<?x8xf32>
    memref.dealloc %a : memref<?x16xf32>
    return
  }
}

// -----

// A column slice keeps its parent alive: %kv (4 * 24 * 4 = 384 bytes) lives
// until the last use of its slice, so %t cannot take its place. i32 buffers
// are planned too; sizes round up to 64 bytes (4 * 2 * 4 = 32 -> 64).
// CHECK-LABEL: func.func @decode
// CHECK-SAME: arena_bytes = 896
// CHECK: %[[KV:.+]] = memref.view %{{.+}}[%{{.+}}][%{{.+}}] : memref<896xi8> to memref<?x24xf32>
// CHECK: %[[S:.+]] = memref.subview %[[KV]][0, 8] [%{{.+}}, 16] [1, 1]
// CHECK: memref.view {{.+}} to memref<?x16xf32>
// CHECK: memref.view {{.+}} to memref<?x2xi32>
module {
  ds.weight @w : tensor<24x16xf32>
  ds.weight @w2 : tensor<16x16xf32>
  ds.weight @g : tensor<2x16xf32>
  func.func @decode(%ids: memref<?xi32>, %pos: memref<?xi32>, %logits: memref<?x2xf32>) attributes {dsk.program = #dsk.program<kind = decode, max_tokens = 4, arena_bytes = 0>} {
    %c0 = arith.constant 0 : index
    %n = memref.dim %ids, %c0 : memref<?xi32>
    %x = memref.alloc(%n) : memref<?x16xf32>
    %kv = memref.alloc(%n) : memref<?x24xf32>
    dsk.linear %x, %kv {weight = @w} : memref<?x16xf32>, memref<?x24xf32>
    %s = memref.subview %kv[0, 8] [%n, 16] [1, 1] : memref<?x24xf32> to memref<?x16xf32, strided<[24, 1], offset: 8>>
    %t = memref.alloc(%n) : memref<?x16xf32>
    dsk.linear %x, %t {weight = @w2} : memref<?x16xf32>, memref<?x16xf32>
    dsk.add %s, %t, %t : memref<?x16xf32, strided<[24, 1], offset: 8>>, memref<?x16xf32>, memref<?x16xf32>
    %i = memref.alloc(%n) : memref<?x2xi32>
    %wt = memref.alloc(%n) : memref<?x2xf32>
    dsk.linear %t, %logits {weight = @g} : memref<?x16xf32>, memref<?x2xf32>
    return
  }
}

// -----

// Functions that are not programs are left alone.
// CHECK-LABEL: func.func @helper
// CHECK: memref.alloc
module {
  func.func @helper(%n: index) {
    %a = memref.alloc(%n) : memref<?x4xf32>
    return
  }
}

// -----

module {
  func.func @prefill(%ids: memref<?xi32>, %pos: memref<?xi32>, %logits: memref<?x8xf32>) attributes {dsk.program = #dsk.program<kind = prefill, max_tokens = 4, arena_bytes = 0>} {
    // expected-error @+1 {{'memref.alloc' op dsk-plan-memory expects [tokens, width] buffers, got 'memref<4xf32>'}}
    %a = memref.alloc() : memref<4xf32>
    return
  }
}
