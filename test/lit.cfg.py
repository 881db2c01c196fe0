# -*- Python -*-
import os

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "DS"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.ds_obj_root, "test")
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py", "Unit", "CudaEmu",
                   "Inputs", "__pycache__"]

config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%ds_src_root", config.ds_src_root))
config.substitutions.append(("%ds_obj_root", config.ds_obj_root))
# Debian's numpy lives under /usr/bin/python3, not the python3 on PATH.
config.substitutions.append(("%python", "/usr/bin/python3"))

llvm_config.with_system_environment(["HOME", "INCLUDE", "LIB", "TMP", "TEMP",
                                     "ASAN_OPTIONS", "UBSAN_OPTIONS"])
llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

tool_dirs = [config.ds_tools_dir, config.llvm_tools_dir]
tools = ["ds-opt", "ds-translate", "ds-compile"]
llvm_config.add_tool_substitutions(tools, tool_dirs)

# Tests compare with CPU references: ds-compile's default target stays cpu
# even on a machine with a GPU (the CUDA tests name --target=cuda).
config.environment["DS_COMPILE_TARGET"] = "cpu"

# CUDA backend tests: REQUIRES: cuda (ds built with the CUDA backend: emit,
# nvcc-build, run without a device) and cuda-gpu (an NVIDIA GPU is usable:
# run for real and compare with the CPU backend).
import shutil
import subprocess
if getattr(config, "ds_have_cuda", 0):
    config.available_features.add("cuda")
    # The CUDA backend built for the CPU (test/CudaEmu): emitted CUDA
    # programs run whole without a GPU.
    config.substitutions.append(
        ("%cuda_emu_cxx", os.path.join(config.ds_tools_dir, "ds-cuda-emu-cxx")))
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listed = subprocess.run([smi, "-L"], capture_output=True, text=True,
                                    timeout=30)
            if listed.returncode == 0 and "GPU" in listed.stdout:
                config.available_features.add("cuda-gpu")
        except (OSError, subprocess.SubprocessError):
            pass

# Multi-rank tests (REQUIRES: mpi): MPI found at configure time, its launcher
# present, and the test program built. Open MPI refuses root and more ranks
# than cores without these (other MPIs ignore them).
comm_mpi_test = os.path.join(config.ds_tools_dir, "dsrt-comm-mpi-test")
ds_mpiexec = getattr(config, "ds_mpiexec", "")
if (getattr(config, "ds_have_mpi", 0) and ds_mpiexec and os.path.exists(ds_mpiexec)
        and os.path.exists(comm_mpi_test)):
    config.available_features.add("mpi")
    config.environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    config.environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    config.environment["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
    # Under DS_SANITIZE=address, Open MPI's own never-freed allocations would
    # fail LeakSanitizer: suppress them (symbolizable only with its
    # components kept loaded and the slow unwinder), keep checking ours.
    asan_options = config.environment.get("ASAN_OPTIONS", "")
    mpi_env = ("env OMPI_MCA_mca_base_component_disable_dlclose=1"
               " LSAN_OPTIONS=suppressions=%s:print_suppressions=0"
               " ASAN_OPTIONS=%sfast_unwind_on_malloc=0" % (
                   os.path.join(config.test_source_root, "Runtime", "Inputs",
                                "lsan-openmpi.supp"),
                   asan_options + ":" if asan_options else ""))
    config.substitutions.append(("%mpirun", mpi_env + " " + ds_mpiexec))
    config.substitutions.append(("%comm_mpi_test", comm_mpi_test))

# Multi-GPU CUDA executables (REQUIRES: nccl): dsrt-nccl was built (CUDA,
# NCCL and MPI found). Their runs need cuda-gpu as well.
comm_nccl_test = os.path.join(config.ds_tools_dir, "dsrt-comm-nccl-test")
if getattr(config, "ds_have_nccl", 0) and "mpi" in config.available_features:
    config.available_features.add("nccl")
    config.substitutions.append(("%comm_nccl_test", comm_nccl_test))
