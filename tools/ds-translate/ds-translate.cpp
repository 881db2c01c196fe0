//===- ds-translate.cpp - import models into the ds dialect ---------------===//
//
//   ds-translate --import-hf-config PATH -o model.mlir
//   ds-translate --emit-cpp kernels.mlir -o model.cpp
//
// PATH is a config.json or a directory holding one; kernels.mlir is a
// planned kernel-level module (ds-opt --ds-lower-to-kernels
// --dsk-plan-memory). The output file is written only on success.
//
//===----------------------------------------------------------------------===//

#include "ds/Dialect/DS/IR/DSOps.h"
#include "ds/Dialect/Kernel/IR/KernelDialect.h"
#include "ds/Target/Cpp.h"
#include "ds/Target/HFConfig.h"

#include "mlir/Parser/Parser.h"
#include "llvm/Support/SourceMgr.h"

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
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "ds-translate: import models into the ds dialect, emit C++\n\n"
      "  ds-translate --import-hf-config PATH -o model.mlir\n"
      "  ds-translate --emit-cpp kernels.mlir -o model.cpp\n");
  if (importHFConfig.empty() == !emitCpp)
    return fail("give exactly one of --import-hf-config PATH or --emit-cpp "
                "(see --help)");

  mlir::MLIRContext context;
  context.loadDialect<ds::DSDialect, ds::kernel::DSKDialect>();
  std::string error;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  if (emitCpp) {
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
    if (mlir::failed(ds::emitCpp(*module, os)))
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
