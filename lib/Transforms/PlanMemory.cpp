//===- PlanMemory.cpp - static arena offsets for kernel-level buffers -----===//

#include "ds/Dialect/Kernel/IR/KernelDialect.h"
#include "ds/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

namespace ds {
#define GEN_PASS_DEF_PLANMEMORY
#include "ds/Transforms/Passes.h.inc"
} // namespace ds

using namespace mlir;
namespace dsk = ds::kernel;

static constexpr int64_t kAlign = 64;

namespace {

struct Buffer {
  memref::AllocOp alloc;
  int64_t bytes = 0;
  int64_t first = 0, last = 0; // live range in launch order, inclusive
  int64_t offset = -1;
};

/// Last op index at which `v` or a view of it is used.
static int64_t lastUse(Value v, const DenseMap<Operation *, int64_t> &order) {
  int64_t last = 0;
  for (Operation *user : v.getUsers()) {
    if (isa<memref::DeallocOp>(user))
      continue; // freeing is not a use: the plan decides lifetimes
    last = std::max(last, order.lookup(user));
    if (isa<ViewLikeOpInterface>(user))
      for (Value r : user->getResults())
        last = std::max(last, lastUse(r, order));
  }
  return last;
}

static LogicalResult planProgram(func::FuncOp fn, dsk::ProgramAttr program) {
  Block &body = fn.getBody().front();
  DenseMap<Operation *, int64_t> order;
  SmallVector<Buffer> buffers;
  int64_t index = 0;
  for (Operation &op : body) {
    order[&op] = index++;
    if (auto alloc = dyn_cast<memref::AllocOp>(op)) {
      MemRefType type = alloc.getType();
      if (type.getRank() != 2 || !type.isDynamicDim(0) ||
          type.isDynamicDim(1) || !type.getLayout().isIdentity())
        return alloc.emitOpError(
            "dsk-plan-memory expects [tokens, width] buffers, got ")
               << type;
      int64_t elementBytes = type.getElementTypeBitWidth() / 8;
      int64_t bytes = program.getMaxTokens() * type.getDimSize(1) * elementBytes;
      buffers.push_back({alloc, static_cast<int64_t>(llvm::alignTo(bytes, kAlign)), 0, 0, -1});
    }
  }
  for (Buffer &buf : buffers) {
    buf.first = order.lookup(buf.alloc);
    buf.last = std::max(buf.first, lastUse(buf.alloc.getResult(), order));
  }

  // Largest first; each at the lowest offset free over its live range.
  SmallVector<Buffer *> bySize;
  for (Buffer &buf : buffers)
    bySize.push_back(&buf);
  llvm::stable_sort(bySize, [](Buffer *a, Buffer *b) { return a->bytes > b->bytes; });
  SmallVector<Buffer *> placed;
  int64_t total = 0;
  for (Buffer *buf : bySize) {
    SmallVector<std::pair<int64_t, int64_t>> busy;
    for (Buffer *other : placed)
      if (other->first <= buf->last && buf->first <= other->last)
        busy.push_back({other->offset, other->offset + other->bytes});
    llvm::sort(busy);
    int64_t offset = 0;
    for (auto [begin, end] : busy) {
      if (offset + buf->bytes <= begin)
        break;
      offset = std::max(offset, end);
    }
    buf->offset = offset;
    total = std::max(total, offset + buf->bytes);
    placed.push_back(buf);
  }

  OpBuilder b(fn.getContext());
  b.setInsertionPointToStart(&body);
  auto arenaType = MemRefType::get({std::max<int64_t>(total, kAlign)}, b.getI8Type());
  Value arena = dsk::ArenaOp::create(b, fn.getLoc(), arenaType);
  for (Buffer &buf : buffers) {
    b.setInsertionPoint(buf.alloc);
    Location loc = buf.alloc.getLoc();
    Value shift = arith::ConstantIndexOp::create(b, loc, buf.offset);
    Value view = memref::ViewOp::create(b, loc, buf.alloc.getType(), arena, shift,
                                        buf.alloc.getDynamicSizes());
    buf.alloc.replaceAllUsesWith(view);
    buf.alloc.erase();
  }
  for (auto dealloc : llvm::make_early_inc_range(body.getOps<memref::DeallocOp>()))
    dealloc.erase();
  fn->setAttr(dsk::kProgramAttrName,
              dsk::ProgramAttr::get(fn.getContext(), program.getKind(),
                                    program.getMaxTokens(), arenaType.getDimSize(0),
                                    program.getStage()));
  return success();
}

struct PlanMemoryPass : public ds::impl::PlanMemoryBase<PlanMemoryPass> {
  void runOnOperation() override {
    for (auto fn : getOperation().getOps<func::FuncOp>()) {
      auto program = fn->getAttrOfType<dsk::ProgramAttr>(dsk::kProgramAttrName);
      if (!program || !fn.getOps<dsk::ArenaOp>().empty())
        continue; // not a program, or planned already
      if (failed(planProgram(fn, program)))
        return signalPassFailure();
    }
  }
};

} // namespace
