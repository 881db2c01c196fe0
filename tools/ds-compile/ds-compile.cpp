//===- ds-compile.cpp - model -> executable -------------------------------===//
//
//   ds-compile INPUT -o OUT [--target=cpu|cuda] [--compute-dtype=f32|bf16]
//              [--max-seq-len=N] [--max-batch=N] [--tp=N] [--ep=N] [--pp=N] [--dp=N]
//              [--emit=mlir|source|exe] [--explain-plan]
//
// INPUT is a ds-dialect .mlir model, or a Hugging Face config.json (or a
// checkpoint directory holding one). A thin driver over the same passes
// ds-opt runs: ds-partition-tp, -ep, -dp, -pp, ds-lower-to-kernels,
// dsk-fuse, dsk-quantize, dsk-plan-memory, then C++ emission and the host
// C++ compiler against libdsrt (and dsrt-mpi for more than one rank), or
// CUDA C++ emission and nvcc against dsrt-cuda (--target=cuda).
//
//===----------------------------------------------------------------------===//

#include "ds/Dialect/DS/IR/DSOps.h"
#include "ds/Dialect/Kernel/IR/KernelDialect.h"
#include "ds/Target/Cpp.h"
#include "ds/Target/Cuda.h"
#include "ds/Target/HFConfig.h"
#include "ds/Transforms/Passes.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"
#include "llvm/ADT/StringSet.h"

namespace cl = llvm::cl;
using namespace mlir;

static cl::OptionCategory category("ds-compile options");

static cl::opt<std::string> input(cl::Positional, cl::Required,
                                  cl::desc("<model.mlir | config.json | checkpoint dir>"),
                                  cl::cat(category));
static cl::opt<std::string> output("o", cl::desc("Output file (required unless --explain-plan)"),
                                   cl::value_desc("file"), cl::cat(category));

enum class Target { Default, Cpu, Cuda };
static cl::opt<Target> target(
    "target",
    cl::desc("Backend (default: $DS_COMPILE_TARGET if set, else cuda when this ds-compile "
             "has the CUDA backend and the machine has an NVIDIA GPU, else cpu)"),
    cl::values(clEnumValN(Target::Cpu, "cpu", "multithreaded C++ on libdsrt's CPU backend"),
               clEnumValN(Target::Cuda, "cuda", "CUDA C++ on dsrt-cuda, built with nvcc (several ranks: NCCL, --tp/--ep)")),
    cl::init(Target::Default), cl::cat(category));

static cl::opt<ds::CudaComputeDtype> computeDtype(
    "compute-dtype", cl::desc("GEMM precision of --target=cuda (default bf16)"),
    cl::values(clEnumValN(ds::CudaComputeDtype::BF16, "bf16",
                          "bf16 GEMM weights and inputs, float32 accumulation"),
               clEnumValN(ds::CudaComputeDtype::F32, "f32",
                          "float32 everywhere (to check against the CPU backend)")),
    cl::init(ds::CudaComputeDtype::BF16), cl::cat(category));

enum class Emit { Mlir, Source, Exe };
static cl::opt<Emit> emit(
    "emit", cl::desc("What to write to -o"),
    cl::values(clEnumValN(Emit::Mlir, "mlir", "the planned kernel-level module"),
               clEnumValN(Emit::Source, "source", "the generated C++"),
               clEnumValN(Emit::Exe, "exe", "the executable (default)")),
    cl::init(Emit::Exe), cl::cat(category));

static cl::opt<int64_t> maxSeqLen("max-seq-len",
                                  cl::desc("Positions the KV cache holds; longest prompt (default 4096)"),
                                  cl::init(4096), cl::cat(category));
static cl::opt<int64_t> maxBatch("max-batch",
                                 cl::desc("Tokens per decode step (default 1)"),
                                 cl::init(1), cl::cat(category));
static cl::opt<int> tp("tp", cl::desc("Tensor-parallel ranks: heads, intermediates, vocabulary (default 1)"),
                       cl::init(1), cl::cat(category));
static cl::opt<int> ep("ep", cl::desc("Expert-parallel ranks: routed experts (default 1)"), cl::init(1),
                       cl::cat(category));
static cl::opt<int> pp("pp", cl::desc("Pipeline-parallel stages: contiguous layer ranges (default 1)"),
                       cl::init(1), cl::cat(category));
static cl::opt<int> dp("dp",
                       cl::desc("Data-parallel replicas: sequences split over them, routed experts "
                                "shared over ep x dp (default 1)"),
                       cl::init(1), cl::cat(category));
enum class Quant { None, Fp8 };
static cl::opt<Quant> quant(
    "quant", cl::desc("Quantization (default none)"),
    cl::values(clEnumValN(Quant::None, "none", "float weights as the checkpoint has them; FP8 checkpoints dequantized"),
               clEnumValN(Quant::Fp8, "fp8", "DeepSeek-V3's FP8 recipe: e4m3 weights in 128x128 blocks, "
                                             "activations per token per 128 channels")),
    cl::init(Quant::None), cl::cat(category));
static cl::opt<bool> noFuse("no-fuse", cl::desc("Do not fuse kernels (dsk-fuse)"), cl::cat(category));
static cl::opt<bool> explainPlan("explain-plan",
                                 cl::desc("Print the plan (per rank: weight bytes, KV-cache bytes per token, "
                                          "communication bytes per token, kernel counts) and exit"),
                                 cl::cat(category));
static cl::opt<std::string> cxx("cxx", cl::desc("Host C++ compiler (default: $CXX, else c++)"),
                                cl::cat(category));
static cl::opt<std::string> nvccPath("nvcc",
                                     cl::desc("CUDA compiler for --target=cuda (default: the "
                                              "one ds was built with)"),
                                     cl::cat(category));
static cl::opt<bool> mpiMain(
    "mpi",
    cl::desc("Build the multi-rank executable (started by mpirun; NCCL collectives with "
             "--target=cuda) even for a one-rank plan: checks that runtime on one GPU"),
    cl::cat(category));
static cl::opt<bool> verbose("v", cl::desc("Print the compiler command"), cl::cat(category));

static int fail(const llvm::Twine &msg) {
  llvm::WithColor::error(llvm::errs(), "ds-compile") << msg << "\n";
  return 1;
}

static OwningOpRef<ModuleOp> load(MLIRContext &ctx, llvm::SourceMgr &sourceMgr,
                                  std::string &error) {
  llvm::StringRef path(input);
  if (llvm::sys::fs::is_directory(path) || path.ends_with(".json"))
    return ds::importHFConfig(path, &ctx, error);
  auto buffer = openInputFile(path, &error);
  if (!buffer)
    return nullptr;
  sourceMgr.AddNewSourceBuffer(std::move(buffer), llvm::SMLoc());
  return parseSourceFile<ModuleOp>(sourceMgr, &ctx);
}

/// Runs the host compiler on `source`, writing the executable to OUT
/// atomically (temp file + rename).
static int buildExecutable(llvm::StringRef source, bool multiRank, bool cuda) {
  llvm::SmallString<128> dir;
  if (std::error_code ec = llvm::sys::fs::createUniqueDirectory("ds-compile", dir))
    return fail("cannot create a temporary directory: " + ec.message());
  llvm::SmallString<128> src(dir), exe(dir);
  llvm::sys::path::append(src, cuda ? "model.cu" : "model.cpp");
  llvm::sys::path::append(exe, "model");
  auto cleanup = [&]() {
    llvm::sys::fs::remove(src);
    llvm::sys::fs::remove(exe);
    llvm::sys::fs::remove(dir);
  };
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(src, ec);
    if (ec)
      return cleanup(), fail(src + ": " + ec.message());
    os << source;
  }
  std::string compiler = cuda ? nvccPath : cxx;
  if (compiler.empty() && !cuda)
    if (const char *env = std::getenv("CXX"))
      compiler = env;
  if (compiler.empty())
    compiler = cuda ? DS_NVCC : "c++";
  auto program = llvm::sys::findProgramByName(compiler);
  if (!program)
    return cleanup(), fail(llvm::Twine(cuda ? "CUDA compiler" : "host C++ compiler") + " '" +
                           compiler + "' not found");

  SmallVector<std::string> args = {*program, "-std=c++17", "-O2", "-w",
                                   "-I", DS_RUNTIME_INCLUDE_DIR};
  if (cuda) {
    // Device code lives in dsrt-cuda; the model's own file is host code, but
    // it is compiled for the same targets so that it may grow kernels.
    for (const char *a : {"-gencode=arch=compute_90a,code=sm_90a",
                          "-gencode=arch=compute_80,code=sm_80"})
      args.push_back(a);
  }
  args.push_back(src.str().str());
  if (cuda && multiRank)
    args.push_back(DS_RUNTIME_NCCL_LIBRARY);
  if (cuda)
    args.push_back(DS_RUNTIME_CUDA_LIBRARY);
  // Multi-rank executables: main comes from dsrt-mpi, which needs MPI.
  if (multiRank)
    args.push_back(DS_RUNTIME_MPI_LIBRARY);
  args.push_back(DS_RUNTIME_LIBRARY);
  SmallVector<StringRef> linkLibs;
  if (multiRank)
    StringRef(DS_RUNTIME_MPI_LINK_LIBS).split(linkLibs, ' ', -1, false);
  StringRef(DS_RUNTIME_LINK_LIBS).split(linkLibs, ' ', -1, false);
  if (cuda)
    StringRef(DS_RUNTIME_CUDA_LINK_LIBS).split(linkLibs, ' ', -1, false);
  if (cuda && multiRank)
    StringRef(DS_RUNTIME_NCCL_LINK_LIBS).split(linkLibs, ' ', -1, false);
  for (StringRef lib : linkLibs) {
    // nvcc takes host-linker flags it does not know through -Xlinker.
    if (cuda && lib.starts_with("-") && !lib.starts_with("-l") && !lib.starts_with("-L"))
      args.push_back("-Xcompiler=" + lib.str());
    else
      args.push_back(lib.str());
  }
  args.push_back("-o");
  args.push_back(exe.str().str());
  SmallVector<StringRef> argRefs(args.begin(), args.end());
  if (verbose) {
    for (StringRef a : argRefs)
      llvm::errs() << a << " ";
    llvm::errs() << "\n";
  }
  std::string message;
  int rc = llvm::sys::ExecuteAndWait(*program, argRefs, std::nullopt, {}, 0, 0,
                                     &message);
  if (rc != 0)
    return cleanup(), fail(llvm::Twine(cuda ? "nvcc" : "the host C++ compiler") + " failed" +
                           (message.empty() ? "" : ": " + message));
  if (std::error_code ec = llvm::sys::fs::copy_file(exe, output + ".tmp"))
    return cleanup(), fail(output + ": " + ec.message());
  llvm::sys::fs::setPermissions(output + ".tmp", llvm::sys::fs::all_read |
                                                     llvm::sys::fs::all_exe |
                                                     llvm::sys::fs::owner_write);
  if (std::error_code ec = llvm::sys::fs::rename(output + ".tmp", output)) {
    llvm::sys::fs::remove(output + ".tmp");
    return cleanup(), fail(output + ": " + ec.message());
  }
  cleanup();
  return 0;
}

/// Bytes of a checkpoint tensor as stored.
static int64_t storageBytes(ds::WeightOp w) {
  RankedTensorType t = w.getTensorType();
  return t.getNumElements() * std::max<int64_t>(1, t.getElementTypeBitWidth() / 8);
}

/// Whether the rank at `coord` (per MeshAxis) holds weight `w`.
static bool holds(ds::WeightOp w, const int64_t coord[4]) {
  if (std::optional<ArrayAttr> shards = w.getShards())
    for (auto s : shards->getAsRange<ds::ShardAttr>())
      if (s.getOwner() >= 0 && s.getOwner() != coord[int(s.getAxis())])
        return false;
  return true;
}

/// Bytes one rank sends per token its replica processes in a decode step
/// (float32 activations, as the CPU runtime sends them): ring all-reduce
/// 2 (P-1)/P * row, all-gather (P-1) * row; expert-parallel MoE, for the 1/ep
/// of the tokens a rank routes, at most min(top_k, G-1) dispatched rows
/// (hidden + 2 top_k floats) and as many combined rows (hidden) over the
/// expert group of G = ep x dp ranks, plus the all-gather of the finished row
/// to the ep-1 other ranks; a pipeline stage's send of its rows to the next;
/// on the last stage the broadcast of logits and hidden rows to the pp-1
/// others; with dp > 1 those rows to the dp-1 other replicas.
static int64_t decodeCommBytes(func::FuncOp decode, ds::PlanAttr plan,
                               int64_t stage, int64_t vocab, int64_t hidden) {
  double bytes = 0;
  auto width = [](Value v) { return double(cast<MemRefType>(v.getType()).getDimSize(1)); };
  decode.walk([&](Operation *op) {
    if (auto r = dyn_cast<ds::kernel::AllReduceOp>(op)) {
      double p = double(plan.getSize(r.getAxis()));
      bytes += 2 * (p - 1) / p * width(r.getInout()) * 4;
    } else if (auto g = dyn_cast<ds::kernel::AllGatherOp>(op)) {
      double p = double(plan.getSize(g.getAxis()));
      bytes += (p - 1) * width(g.getInput()) * 4;
    } else if (auto m = dyn_cast<ds::kernel::MoEExpertsOp>(op)) {
      if (m.getEp() <= 1)
        return;
      double group = double(m.getEp()), ep = double(plan.getEp());
      double k = width(m.getIndices()), h = width(m.getInput());
      double rows = std::min(k, group - 1);
      bytes += (rows * (h + 2 * k) * 4 + rows * h * 4 + (ep - 1) * h * 4) / ep;
    } else if (auto send = dyn_cast<ds::kernel::SendOp>(op)) {
      bytes += width(send.getInput()) * 4;
    }
  });
  double outputs = double(vocab + hidden) * 4;
  if (plan.getPp() > 1 && stage == plan.getPp() - 1)
    bytes += double(plan.getPp() - 1) * outputs;
  if (plan.getDp() > 1)
    bytes += double(plan.getDp() - 1) * outputs;
  return std::llround(bytes);
}

/// --explain-plan: per rank, what it holds and does.
static void explain(ModuleOp module, llvm::raw_ostream &os) {
  auto plan = module->getAttrOfType<ds::PlanAttr>(ds::DSDialect::kPlanAttrName);
  if (!plan)
    plan = ds::PlanAttr::get(module.getContext(), 1, 1, 1, 1);
  llvm::StringSet<> read;
  module.walk([&](ds::WeightUserInterface op) {
    SmallVector<ds::WeightUse> uses;
    op.getWeightUses(uses);
    for (const ds::WeightUse &u : uses)
      read.insert(u.name);
  });
  SmallVector<ds::WeightOp> held;
  for (auto w : module.getOps<ds::WeightOp>()) {
    StringRef name = w.getSymName();
    // FP8 scales travel with the weight they scale.
    if (read.contains(name) ||
        (name.consume_back(ds::kScaleSuffix) && read.contains(name)))
      held.push_back(w);
  }
  auto model = module->getAttrOfType<ds::kernel::ModelAttr>(ds::kernel::kModelAttrName);
  const int64_t rowBytes = (model.getKvLoraRank() + model.getQkRope()) * 2;
  // Per pipeline stage: kernels per program kind, the cache layers its
  // programs write, decode communication.
  struct Stage {
    SmallVector<std::pair<StringRef, int64_t>> kernels;
    int64_t cacheLayers = 0, comm = 0;
  };
  SmallVector<Stage> stages(plan.getPp());
  for (auto fn : module.getOps<func::FuncOp>()) {
    auto program = fn->getAttrOfType<ds::kernel::ProgramAttr>(ds::kernel::kProgramAttrName);
    Stage &stage = stages[program.getStage()];
    int64_t count = 0;
    for (Operation &op : fn.getBody().front()) {
      count += isa<ds::kernel::DSKDialect>(op.getDialect()) && !isa<ds::kernel::ArenaOp>(op);
      if (program.getKind() != ds::kernel::ProgramKind::decode)
        stage.cacheLayers +=
            isa<ds::kernel::KVCacheWriteOp, ds::kernel::RoPEKVCacheWriteOp,
                ds::kernel::QKRoPECacheWriteOp>(op) ||
            (isa<ds::kernel::MLAAttentionAbsorbedOp>(op) &&
             cast<ds::kernel::MLAAttentionAbsorbedOp>(op).getLatent());
    }
    stage.kernels.push_back({ds::kernel::stringifyProgramKind(program.getKind()), count});
    if (program.getKind() == ds::kernel::ProgramKind::decode)
      stage.comm = decodeCommBytes(fn, plan, program.getStage(), model.getVocab(),
                                   model.getHidden());
  }
  os << "ranks: " << plan.getRanks() << " (tp " << plan.getTp() << " x ep " << plan.getEp()
     << " x pp " << plan.getPp() << " x dp " << plan.getDp() << ")\n";
  for (int64_t rank = 0; rank < plan.getRanks(); ++rank) {
    // Rank layout of #ds.plan: tp fastest, then ep, dp, pp.
    int64_t coord[4], rest = rank;
    for (ds::MeshAxis a : {ds::MeshAxis::tp, ds::MeshAxis::ep, ds::MeshAxis::dp, ds::MeshAxis::pp}) {
      coord[int(a)] = rest % plan.getSize(a);
      rest /= plan.getSize(a);
    }
    int64_t weightBytes = 0;
    for (ds::WeightOp w : held)
      if (holds(w, coord))
        weightBytes += storageBytes(w);
    const Stage &stage = stages[coord[int(ds::MeshAxis::pp)]];
    os << "\nrank: " << rank << "\n";
    os << "mesh: tp " << coord[0] << ", ep " << coord[1] << ", pp " << coord[2] << ", dp " << coord[3]
       << "\n";
    os << "weights.bytes: " << weightBytes << "\n";
    os << "kv_cache.bytes_per_token: " << stage.cacheLayers * rowBytes << "\n";
    os << "comm.bytes_per_token.decode: " << stage.comm << "\n";
    for (auto [name, count] : stage.kernels)
      os << "kernels." << name << ": " << count << "\n";
  }
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  registerPassManagerCLOptions();
  registerAsmPrinterCLOptions();
  registerMLIRContextCLOptions();
  // The LLVM libraries register hundreds of backend options: --help shows
  // ds-compile's, MLIR's (--mlir-*) and the generic ones (--help,
  // --version); --help-hidden the rest.
  auto &options = cl::getRegisteredOptions();
  const auto generic = options.lookup("help")->Categories;
  for (auto &[name, option] : options) {
    const bool shown =
        name.starts_with("mlir-") ||
        llvm::any_of(option->Categories, [&](cl::OptionCategory *c) {
          return c == &category || llvm::is_contained(generic, c);
        });
    if (!shown && option->getOptionHiddenFlag() == cl::NotHidden)
      option->setHiddenFlag(cl::Hidden);
  }
  cl::ParseCommandLineOptions(
      argc, argv,
      "ds-compile: compile a DeepSeek-architecture model to an executable\n\n"
      "  ds-compile INPUT -o OUT [--target=cpu|cuda] [--max-seq-len=N] [--emit=exe]\n"
      "  OUT [--weights PATH] [--prompt-ids 1,2,3] [--max-new-tokens N] ...\n\n"
      "  The --mlir-* options (IR printing around passes, crash reproducers)\n"
      "  apply to the compilation pipeline.\n");

  Target chosen = target;
  if (chosen == Target::Default)
    if (const char *env = std::getenv("DS_COMPILE_TARGET")) {
      if (StringRef(env) != "cpu" && StringRef(env) != "cuda")
        return fail(llvm::Twine("DS_COMPILE_TARGET=") + env + ": expected cpu or cuda");
      chosen = StringRef(env) == "cpu" ? Target::Cpu : Target::Cuda;
    }
  bool cuda = chosen == Target::Cuda;
  if (cuda && !*DS_RUNTIME_CUDA_LIBRARY)
    return fail("--target=cuda: this ds-compile was built without the CUDA backend (no CUDA "
                "toolkit was found when ds was configured)");
  if (chosen == Target::Default)
    cuda = *DS_RUNTIME_CUDA_LIBRARY && llvm::sys::fs::exists("/dev/nvidiactl");
  if (computeDtype.getNumOccurrences() && !cuda)
    return fail("--compute-dtype applies to --target=cuda only");
  for (auto [name, v] : {std::pair<const char *, int>{"tp", tp}, {"ep", ep}, {"pp", pp}, {"dp", dp}})
    if (v < 1)
      return fail(llvm::Twine("--") + name + "=" + llvm::Twine(v) + ": must be at least 1");
  if (!explainPlan && output.empty())
    return fail("no output file: give -o OUT (or --explain-plan)");

  MLIRContext ctx;
  // A diagnostic on the module must not print the module (a 671B model's
  // has some 50 000 weights).
  ctx.printOpOnDiagnostic(false);
  ctx.loadDialect<ds::DSDialect, ds::kernel::DSKDialect>();
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler handler(sourceMgr, &ctx);
  std::string error;
  OwningOpRef<ModuleOp> module = load(ctx, sourceMgr, error);
  if (!module)
    return error.empty() ? 1 : fail(error);
  if (failed(verify(*module)))
    return 1;

  // The plan: the attribute the partition passes read. Flags win over a plan
  // the input module already carries (e.g. from ds-opt).
  if (int64_t(tp) * ep * pp * dp > 1)
    (*module)->setAttr(ds::DSDialect::kPlanAttrName, ds::PlanAttr::get(&ctx, tp, ep, pp, dp));
  auto plan = (*module)->getAttrOfType<ds::PlanAttr>(ds::DSDialect::kPlanAttrName);
  const int64_t ranks = plan ? plan.getRanks() : 1;
  const bool multiRank = ranks > 1 || mpiMain;
  if (cuda && plan && (plan.getPp() > 1 || plan.getDp() > 1) && !explainPlan)
    return fail("--target=cuda: pipeline (--pp) and data (--dp) parallelism are not supported "
                "on GPUs yet (--tp and --ep are); use --target=cpu");
  if (cuda && multiRank && emit == Emit::Exe && !explainPlan && !*DS_RUNTIME_NCCL_LIBRARY)
    return fail("multi-rank --target=cuda executables need NCCL and MPI, and this ds-compile "
                "was built without them (install NCCL and libopenmpi-dev and reconfigure)");
  if (multiRank && emit == Emit::Exe && !explainPlan && !*DS_RUNTIME_MPI_LIBRARY)
    return fail("multi-rank executables need MPI, and this ds-compile was built without it "
                "(install libopenmpi-dev and reconfigure)");

  PassManager pm(&ctx);
  if (failed(applyPassManagerCLOptions(pm)))
    return 1;
  pm.addPass(ds::createPartitionTP());
  pm.addPass(ds::createPartitionEP());
  pm.addPass(ds::createPartitionDP());
  pm.addPass(ds::createPartitionPP());
  ds::LowerToKernelsOptions lowering;
  lowering.maxSeqLen = maxSeqLen;
  lowering.maxBatch = maxBatch;
  pm.addPass(ds::createLowerToKernels(lowering));
  if (!noFuse)
    pm.addPass(ds::createFuse());
  if (quant == Quant::Fp8)
    pm.addPass(ds::createQuantize());
  pm.addPass(ds::createPlanMemory());
  if (failed(pm.run(*module)))
    return 1;
  if (explainPlan) {
    explain(*module, llvm::outs());
    return 0;
  }

  std::string text;
  llvm::raw_string_ostream os(text);
  if (emit == Emit::Mlir)
    module->print(os);
  else if (failed(cuda ? ds::emitCuda(*module, os, computeDtype, multiRank)
                       : ds::emitKernelModule(*module, os, ds::KernelTarget{
                                                               ds::KernelTarget::Cpu,
                                                               false, multiRank})))
    return 1;
  if (emit != Emit::Exe) {
    auto out = openOutputFile(output, &error);
    if (!out)
      return fail(error);
    out->os() << text;
    out->keep();
    return 0;
  }
  return buildExecutable(text, multiRank, cuda);
}
