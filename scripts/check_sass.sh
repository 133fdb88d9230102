#!/usr/bin/env bash
# Checks that the tensor-core attention kernels really use tensor cores: disassembles the CUDA
# library of a build (cuobjdump -sass on <build>/libll_cuda.a) and counts, per kernel and per
# architecture (sm_80, sm_90a), the HMMA instructions of every attention_forward_tc kernel
# (mma.sync lowers to HMMA on both), and the HGMMA (wgmma) and UTMALDG (bulk tensor copy)
# instructions of the Hopper kernels (names containing _sm90_: forward, dK/dV, dQ; sm_90a only:
# their sm_80 bodies are empty). Also counts LDSM (ldmatrix), MUFU.EX2 and local-memory instructions (LDL/STL, which
# ptxas -warn-lmem-usage should already have refused).
#
# Usage: scripts/check_sass.sh [build-dir]     (default: build)
# CHECK_SASS_PATTERN=<substring> checks other kernels instead (e.g. to see the check fail).
# CHECK_SASS_ARCHS="sm_90a" for a build of other architectures than sm_80 + sm_90a.
# Exit status: 0 when every architecture has tc kernels and each has HMMA and no LDL/STL;
#              1 when one does not; 2 when the library or cuobjdump cannot be found.
# cuobjdump: $CUOBJDUMP, else PATH, else $CUDA_HOME/bin or /usr/local/cuda/bin, else the copy
# bundled with a pip-installed triton or nvidia-cuda-cuobjdump.
set -euo pipefail

build_dir="${1:-build}"
lib="${build_dir}/libll_cuda.a"
pattern="${CHECK_SASS_PATTERN:-attention_forward_tc}"  # kernels whose mangled name contains it
read -r -a archs <<<"${CHECK_SASS_ARCHS:-sm_80 sm_90a}"  # the build's architectures

if [[ ! -f "${lib}" ]]; then
  echo "check_sass: ${lib} not found (build ll_cuda with -DLL_ENABLE_CUDA=ON first)" >&2
  exit 2
fi

find_cuobjdump() {
  if [[ -n "${CUOBJDUMP:-}" ]]; then echo "${CUOBJDUMP}"; return; fi
  if command -v cuobjdump >/dev/null 2>&1; then command -v cuobjdump; return; fi
  local d
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    if [[ -n "${d}" && -x "${d}/bin/cuobjdump" ]]; then echo "${d}/bin/cuobjdump"; return; fi
  done
  local py
  for py in python3 python; do
    command -v "${py}" >/dev/null 2>&1 || continue
    local found
    found=$("${py}" - <<'EOF' 2>/dev/null || true
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
for root in roots:
    for pat in ("triton/backends/nvidia/bin/cuobjdump", "nvidia/cuda_cuobjdump/bin/cuobjdump",
                "nvidia/cu*/bin/cuobjdump"):
        for path in glob.glob(os.path.join(root, pat)):
            if os.access(path, os.X_OK):
                print(path)
                sys.exit(0)
EOF
)
    if [[ -n "${found}" ]]; then echo "${found}"; return; fi
  done
  return 1
}

if ! tool=$(find_cuobjdump); then
  echo "check_sass: cuobjdump not found (set CUOBJDUMP, or install the CUDA toolkit's" \
       "cuobjdump, e.g. pip install nvidia-cuda-cuobjdump)" >&2
  exit 2
fi
echo "check_sass: ${tool} -sass ${lib}"

sass=$(mktemp)
trap 'rm -f "${sass}"' EXIT
"${tool}" -sass "${lib}" >"${sass}"

demangle() { if command -v c++filt >/dev/null 2>&1; then c++filt; else cat; fi; }

# One line per (arch, kernel) of the kernels whose name contains $1:
# arch <tab> mangled name <tab> HMMA HGMMA UTMALDG LDSM EX2 LOCAL.
count_table() {
  awk -v pat="$1" '
  /^[[:space:]]*arch = / { arch = $3; next }
  /Function : / { fn = $3; if (index(fn, pat) > 0) { key = arch "\t" fn; seen[key] = 1 } next }
  fn != "" && index(fn, pat) > 0 {
    key = arch "\t" fn
    if ($0 ~ /[[:space:]]HMMA/) hmma[key]++
    if ($0 ~ /HGMMA/) hgmma[key]++
    if ($0 ~ /UTMALDG/) tma[key]++
    if ($0 ~ /LDSM/) ldsm[key]++
    if ($0 ~ /MUFU\.EX2/) ex2[key]++
    if ($0 ~ /[[:space:]](LDL|STL)(\.|[[:space:]])/) lmem[key]++
  }
  END {
    for (key in seen)
      printf "%s\t%d\t%d\t%d\t%d\t%d\t%d\n", key, hmma[key] + 0, hgmma[key] + 0, tma[key] + 0,
        ldsm[key] + 0, ex2[key] + 0, lmem[key] + 0
  }' "${sass}" | sort
}

status=0
printf '%-7s %6s %6s %7s %6s %6s %6s  %s\n' arch HMMA HGMMA UTMALDG LDSM EX2 LDL/STL kernel
# check <name pattern> <required instruction: hmma|hgmma> <archs...>
check() {
  local pat="$1" need="$2"
  shift 2
  local table arch
  table=$(count_table "${pat}")
  while IFS=$'\t' read -r arch fn hmma hgmma tma ldsm ex2 lmem; do
    [[ -z "${arch}" ]] && continue
    [[ " $* " == *" ${arch} "* ]] || continue
    name=$(echo "${fn}" | demangle | sed -E 's/\(anonymous namespace\):://g; s/^void //; s/\(.*$//')
    verdict=ok
    if [[ "${need}" == hmma ]] && (( hmma == 0 )); then verdict="FAIL: no HMMA"; status=1; fi
    if [[ "${need}" == hgmma ]] && (( hgmma == 0 || tma == 0 )); then
      verdict="FAIL: no HGMMA or no UTMALDG"; status=1
    fi
    if (( lmem > 0 )); then verdict="FAIL: local memory"; status=1; fi
    printf '%-7s %6d %6d %7d %6d %6d %6d  %s  %s\n' "${arch}" "${hmma}" "${hgmma}" "${tma}" \
      "${ldsm}" "${ex2}" "${lmem}" "${name}" "${verdict}"
  done <<<"${table}"
  for arch in "$@"; do
    if ! grep -q "^${arch}"$'\t' <<<"${table}"; then
      echo "check_sass: FAIL: no ${pat} kernel in the ${arch} SASS" >&2
      status=1
    fi
  done
}

check "${pattern}" hmma "${archs[@]}"
hopper=""
if [[ -z "${CHECK_SASS_PATTERN:-}" && " ${archs[*]} " == *" sm_90a "* ]]; then
  check _sm90_ hgmma sm_90a
  hopper=", and the Hopper kernels have HGMMA and UTMALDG on sm_90a"
fi
if (( status == 0 )); then
  echo "check_sass: ok: every ${pattern} kernel has HMMA on ${archs[*]}${hopper}"
fi
exit "${status}"
