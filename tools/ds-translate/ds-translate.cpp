//===- ds-translate.cpp - import models into the ds dialect ---------------===//
//
//   ds-translate --import-hf-config PATH -o model.mlir
//   ds-translate --emit-cpp kernels.mlir -o model.cpp
//   ds-translate --emit-cuda [--compute-dtype=f32|bf16] kernels.mlir -o model.cu
//
// PATH is a config.json or a directory holding one; kernels.mlir is a
// planned kernel-level module (ds-opt --ds-lower-to-kernels
// --dsk-plan-memory). The output file is written only on success.
//
//===----------------------------------------------------------------------===//

#include "ds/Dialect/DS/IR/DSOps.h"
#include "ds/Dialect/Kernel/IR/KernelDialect.h"
#include "ds/Target/Cpp.h"
#include "ds/Target/Cuda.h"
#include "ds/Target/HFConfig.h"

#include "mlir/Parser/Parser.h"
#include "llvm/Support/SourceMgr.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

namespace cl = llvm::cl;

static cl::OptionCategory category("ds-translate options");

static cl::opt<std::string> importHFConfig(
    "import-hf-config",
    cl::desc("Import a Hugging Face config.json (deepseek_v3 or deepseek_v2), "
             "or a checkpoint directory holding one"),
    cl::value_desc("path"), cl::cat(category));

static cl::opt<bool> emitCpp(
    "emit-cpp",
    cl::desc("Emit a planned kernel-level module as C++ for libdsrt's CPU "
             "backend"),
    cl::cat(category));

static cl::opt<bool> emitCuda(
    "emit-cuda",
    cl::desc("Emit a planned kernel-level module as CUDA C++ for libdsrt-cuda"),
    cl::cat(category));

static cl::opt<ds::CudaComputeDtype> computeDtype(
    "compute-dtype", cl::desc("GEMM precision of --emit-cuda (default bf16)"),
    cl::values(clEnumValN(ds::CudaComputeDtype::BF16, "bf16", "bf16 GEMM weights"),
               clEnumValN(ds::CudaComputeDtype::F32, "f32", "float32 GEMM weights")),
    cl::init(ds::CudaComputeDtype::BF16), cl::cat(category));

static cl::opt<std::string> inputFilename(cl::Positional,
                                          cl::desc("[input.mlir]"),
                                          cl::init("-"), cl::cat(category));

static cl::opt<std::string> outputFilename("o", cl::desc("Output file ('-': stdout)"),
                                           cl::value_desc("file"),
                                           cl::init("-"), cl::cat(category));

static int fail(const llvm::Twine &msg) {
  llvm::WithColor::error(llvm::errs(), "ds-translate") << msg << "\n";
  return 1;
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  mlir::registerAsmPrinterCLOptions();
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "ds-translate: import models into the ds dialect, emit C++\n\n"
      "  ds-translate --import-hf-config PATH -o model.mlir\n"
      "  ds-translate --emit-cpp kernels.mlir -o model.cpp\n"
      "  ds-translate --emit-cuda kernels.mlir -o model.cu\n\n"
      "  MLIR's printing options apply to the imported module, e.g.\n"
      "  --mlir-print-debuginfo shows each op's checkpoint name and config\n"
      "  field.\n");
  if (int(!importHFConfig.empty()) + int(emitCpp) + int(emitCuda) != 1)
    return fail("give exactly one of --import-hf-config PATH, --emit-cpp or "
                "--emit-cuda (see --help)");
  if (computeDtype.getNumOccurrences() && !emitCuda)
    return fail("--compute-dtype applies to --emit-cuda only");

  mlir::MLIRContext context;
  // A diagnostic on the module must not print the whole module.
  context.printOpOnDiagnostic(false);
  context.loadDialect<ds::DSDialect, ds::kernel::DSKDialect>();
  std::string error;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  if (emitCpp || emitCuda) {
    llvm::SourceMgr sourceMgr;
    mlir::SourceMgrDiagnosticHandler handler(sourceMgr, &context);
    auto input = mlir::openInputFile(inputFilename, &error);
    if (!input)
      return fail(error);
    sourceMgr.AddNewSourceBuffer(std::move(input), llvm::SMLoc());
    module = mlir::parseSourceFile<mlir::ModuleOp>(sourceMgr, &context);
    if (!module)
      return 1;
    std::string source;
    llvm::raw_string_ostream os(source);
    if (mlir::failed(emitCuda ? ds::emitCuda(*module, os, computeDtype)
                              : ds::emitCpp(*module, os)))
      return 1;
    std::unique_ptr<llvm::ToolOutputFile> out =
        mlir::openOutputFile(outputFilename, &error);
    if (!out)
      return fail(error);
    out->os() << source;
    out->os().flush();
    if (out->os().has_error())
      return fail(outputFilename + ": write failed");
    out->keep();
    return 0;
  }

  module = ds::importHFConfig(importHFConfig, &context, error);
  if (!module)
    return fail(error);
  // The importer validates the config; verifying the module as well guards
  // the importer itself.
  if (mlir::failed(mlir::verify(*module)))
    return fail(importHFConfig + ": the imported model does not verify");

  std::unique_ptr<llvm::ToolOutputFile> out =
      mlir::openOutputFile(outputFilename, &error);
  if (!out)
    return fail(error);
  module->print(out->os());
  out->os().flush();
  if (out->os().has_error())
    return fail(outputFilename + ": write failed");
  out->keep();
  return 0;
}
