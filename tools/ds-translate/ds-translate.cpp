//===- ds-translate.cpp - import models into the ds dialect ---------------===//
//
//   ds-translate --import-hf-config PATH -o model.mlir
//
// PATH is a config.json or a directory holding one. The output file is
// written only when the import succeeds.
//
//===----------------------------------------------------------------------===//

#include "ds/Dialect/DS/IR/DSOps.h"
#include "ds/Target/HFConfig.h"

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
      "ds-translate: import models into the ds dialect\n\n"
      "  ds-translate --import-hf-config PATH -o model.mlir\n");
  if (importHFConfig.empty())
    return fail("nothing to do: give --import-hf-config PATH (see --help)");

  mlir::MLIRContext context;
  context.loadDialect<ds::DSDialect>();
  std::string error;
  mlir::OwningOpRef<mlir::ModuleOp> module =
      ds::importHFConfig(importHFConfig, &context, error);
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
