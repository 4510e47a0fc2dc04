#!/usr/bin/env bash
# Builds grpo-cpp against the CUDA LibTorch inside an installed PyTorch on a GPU machine that has
# no Debian packages installed: the project's other dependencies (OpenMPI, yaml-cpp, fmt, ...) come
# as Debian .deb files unpacked with `dpkg -x` into a private prefix. Used for the GPU checks
# recorded in docs/performance.md. Usage:
#   bench/gpu/build_on_gpu_host.sh DEBS_DIR BUILD_DIR [cmake targets...]
# Then source BUILD_DIR/env.sh for the run-time environment (library path, OPAL_PREFIX).
set -uo pipefail
debs=${1:?DEBS_DIR}; build=${2:?BUILD_DIR}; shift 2
prefix=/tmp/grpo-deps
mkdir -p "$prefix" "$build"
for f in "$debs"/*.deb; do dpkg -x "$f" "$prefix"; done
usr=$prefix/usr; lib=$usr/lib/x86_64-linux-gnu
for tool in mpirun mpiexec mpicc; do
  [ -e "$usr/bin/$tool.openmpi" ] && ln -sf "$tool.openmpi" "$usr/bin/$tool"
done
# Debian's packages point some .so links at /etc/alternatives; re-point them inside the prefix.
[ -e "$lib/libmpi.so" ] || ln -sf openmpi/lib/libmpi.so "$lib/libmpi.so"
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
nccl_root=$(python3 -c 'import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
cat > "$build/env.sh" <<ENV
export OPAL_PREFIX=$usr
export PMIX_INSTALL_PREFIX=$lib/pmix2
export PATH=$usr/bin:\$PATH
export LD_LIBRARY_PATH=$lib:$lib/openmpi/lib:$torch_lib:${nccl_root:+$nccl_root/lib:}\${LD_LIBRARY_PATH:-}
export PMIX_MCA_pcompress_base_silence_warning=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1
ENV
source "$build/env.sh"
echo "torch: $(python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())')"
echo "nccl wheel: ${nccl_root:-none}; gcc: $(g++ --version | head -1); cmake: $(cmake --version | head -1)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$usr" \
  -DMPI_C_COMPILER="$usr/bin/mpicc.openmpi" -DMPIEXEC_EXECUTABLE="$usr/bin/mpirun.openmpi" \
  -DGRPO_NCCL_ROOT="$nccl_root" -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DTORCH_CUDA_ARCH_LIST=9.0 || exit 1
cmake --build "$build" -j "$(nproc)" ${1:+--target "$@"} -- -k 0
