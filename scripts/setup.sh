#!/usr/bin/env bash
# Installs the Debian packages the engine builds against. Idempotent and quick when
# everything is present (dpkg checks only; apt-get runs only for what is missing).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config clang-format
  libsentencepiece-dev libyaml-cpp-dev libfmt-dev doctest-dev nlohmann-json3-dev
  libcli11-dev libopenblas-dev base-files bible-kjv
  libpcre2-dev libicu-dev  # tokenizer.json: pre-tokenizer regexes (PCRE2), NFC (ICU)
  libopenmpi-dev openmpi-bin  # data-parallel training (engine/parallel/): mpirun and MPI::MPI_CXX
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then sudo_cmd=(sudo); else
    echo "setup: not root and no sudo; run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

if ! command -v nvcc >/dev/null && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: note: no CUDA toolkit found; the CUDA backend will not be built"
fi
