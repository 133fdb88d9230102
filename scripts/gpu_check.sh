#!/usr/bin/env bash
# The GPU check: on a machine with a GPU and nothing else prepared (no Debian libraries, no
# network), build for that card, run every GPU test (plain and under compute-sanitizer), and
# write a short report to OUT_DIR/report.md with the card, driver, commit and pass/fail per
# test. Debian libraries come from .deps/debs (scripts/fetch_gpu_deps.sh), unpacked with
# dpkg -x into .deps/root when the system lacks them.
# Usage: scripts/gpu_check.sh OUT_DIR
set -uo pipefail
out=${1:?usage: $0 OUT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p "$out"
log="$out/gpu_check.log"
: > "$log"
step() { echo "== $*" | tee -a "$log"; }

step "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv; nvcc --version | tail -1; } >> "$log" 2>&1
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
arch=$([[ "$cc" == 90 ]] && echo 90a || echo "$cc")
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

prefix_args=()
if [[ -d .deps/debs ]] && ! pkg-config --exists sentencepiece 2>/dev/null; then
  step "unpacking .deps/debs into .deps/root"
  mkdir -p .deps/root
  for deb in .deps/debs/*.deb; do dpkg -x "$deb" .deps/root >> "$log" 2>&1; done
  r="$root/.deps/root"
  export PATH="$r/usr/bin:$PATH"
  export PKG_CONFIG_PATH="$r/usr/lib/x86_64-linux-gnu/pkgconfig:$r/usr/lib/x86_64-linux-gnu/openblas-pthread/pkgconfig:$r/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR="$r"
  export LD_LIBRARY_PATH="$r/usr/lib/x86_64-linux-gnu:$r/usr/lib/x86_64-linux-gnu/openblas-pthread:${LD_LIBRARY_PATH:-}"
  export LIBRARY_PATH="$r/usr/lib/x86_64-linux-gnu:$r/usr/lib/x86_64-linux-gnu/openblas-pthread:${LIBRARY_PATH:-}"
  prefix_args=(-DCMAKE_PREFIX_PATH="$r/usr;$r/usr/lib/x86_64-linux-gnu/cmake;$r/usr/share/cmake")
fi

step "build for sm_$arch"
build_ok=1
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  "${prefix_args[@]}" >> "$log" 2>&1 && ninja -C build-gpu >> "$log" 2>&1 || build_ok=0

results=()
if ((build_ok)); then
  step "GPU tests"
  (cd build-gpu && ctest -L gpu --output-on-failure --timeout 300) > "$out/ctest_gpu.txt" 2>&1
  for t in build-gpu/*_gpu; do
    name=$(basename "$t")
    if "$t" > "$out/$name.txt" 2>&1; then plain=pass; else plain="FAIL($?)"; fi
    if command -v compute-sanitizer >/dev/null; then
      if compute-sanitizer --error-exitcode 9 "$t" > "$out/$name.sanitizer.txt" 2>&1; then san=clean; else san="FAIL($?)"; fi
    else
      san="no compute-sanitizer"
    fi
    results+=("| $name | $plain | $san |")
  done
  step "CPU suite (same build)"
  (cd build-gpu && ctest -LE 'gpu|slow' -j 8) > "$out/ctest_cpu.txt" 2>&1 && cpu=pass || cpu=FAIL
fi

{
  echo "# GPU check"
  echo
  echo "card: $card, driver $driver, sm_$arch; commit $commit; $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  if ((build_ok)); then
    echo "| test | run | compute-sanitizer |"
    echo "|---|---|---|"
    printf '%s\n' "${results[@]}"
    echo
    echo "CPU suite on this machine: ${cpu:-not run}"
  else
    echo "BUILD FAILED: see gpu_check.log"
  fi
} > "$out/report.md"
cat "$out/report.md"
