//===- ds-opt.cpp - mlir-opt for the ds dialect ---------------------------===//

#include "ds/Dialect/DS/IR/DSDialect.h"
#include "ds/Dialect/Kernel/IR/KernelDialect.h"
#include "ds/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "llvm/Support/CommandLine.h"

#include <cstring>
#include <vector>

/// Report passes print to stdout; unless the user asks for the IR with -o, it
/// is not printed after them, so their output is exactly the report.
static bool isReportOnly(int argc, char **argv) {
  bool report = false;
  for (int i = 1; i < argc; ++i) {
    llvm::StringRef arg(argv[i]);
    if (arg == "-o" || arg.starts_with("-o=") || arg == "--o" ||
        arg.starts_with("--o="))
      return false;
    report |= arg.contains("ds-model-stats");
  }
  return report;
}

/// The LLVM libraries register hundreds of backend options (polly, amdgpu,
/// ...) before main: hide them from --help (--help-hidden still lists
/// them), keeping the generic ones. MlirOptMain registers its own and
/// MLIR's options when it runs, after this, so those stay shown.
static void hideBackendOptions() {
  auto &options = llvm::cl::getRegisteredOptions();
  const auto generic = options.lookup("help")->Categories;
  for (auto &[name, option] : options) {
    const bool shown =
        name.starts_with("mlir-") ||
        llvm::any_of(option->Categories, [&](llvm::cl::OptionCategory *c) {
          return llvm::is_contained(generic, c);
        });
    if (!shown && option->getOptionHiddenFlag() == llvm::cl::NotHidden)
      option->setHiddenFlag(llvm::cl::Hidden);
  }
}

int main(int argc, char **argv) {
  hideBackendOptions();
  mlir::registerAllPasses();
  ds::registerDSPasses();

  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  registry.insert<ds::DSDialect, ds::kernel::DSKDialect>();

  std::vector<char *> args(argv, argv + argc);
  static char dashO[] = "-o=/dev/null";
  if (isReportOnly(argc, argv))
    args.push_back(dashO);
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      static_cast<int>(args.size()), args.data(), "ds optimizer driver\n",
      registry));
}
