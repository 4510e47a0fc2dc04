#!/usr/bin/env bash
# Installs every Debian package grpo-cpp needs to build, test and run on CPU.
# Idempotent and non-interactive; fetches nothing but Debian packages.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git python3
  libtorch-dev              # LibTorch 1.13 (CPU); links the system BLAS
  libopenblas0-openmp       # 4-11x the reference BLAS (see docs/performance.md)
  libopenmpi-dev openmpi-bin
  libyaml-cpp-dev libfmt-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev
  libseccomp-dev libpcre2-dev
  libutf8proc-dev           # Unicode NFC for tokenizer normalizers (docs/models.md)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
