#!/usr/bin/env python3
"""Prints one line per (architecture, kernel) of a CUDA library: a hash of its SASS instructions
(addresses and encodings left out). Two builds whose fingerprints are equal run the same machine
code, which is how a change that only moves code is checked:

    scripts/sass_fingerprint.py build-before/libll_cuda.a > before.txt
    scripts/sass_fingerprint.py build/libll_cuda.a > after.txt && diff before.txt after.txt

cuobjdump (and its nvdisasm): $CUOBJDUMP, PATH, /usr/local/cuda/bin, or pip's
nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm. RENAMED=old=new,... maps renamed mangled names.
"""
import glob
import hashlib
import os
import re
import shutil
import site
import subprocess
import sys


def find_cuobjdump():
    if os.environ.get("CUOBJDUMP"):
        return os.environ["CUOBJDUMP"]
    found = shutil.which("cuobjdump") or (
        "/usr/local/cuda/bin/cuobjdump" if os.access("/usr/local/cuda/bin/cuobjdump", os.X_OK) else None)
    if found:
        return found
    for root in site.getsitepackages() + [site.getusersitepackages()]:
        for path in glob.glob(os.path.join(root, "nvidia/cu*/bin/cuobjdump")) + glob.glob(
                os.path.join(root, "nvidia/cuda_cuobjdump/bin/cuobjdump")):
            return path
    sys.exit("sass_fingerprint: cuobjdump not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    tool = find_cuobjdump()
    os.environ["PATH"] += os.pathsep + os.path.dirname(tool)  # cuobjdump runs nvdisasm
    run = subprocess.run([tool, "-sass", sys.argv[1]], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"sass_fingerprint: {tool} failed: {run.stderr.strip()}")
    renames = [r.split("=", 1) for r in os.environ.get("RENAMED", "").split(",") if "=" in r]
    bodies, arch, fn = {}, None, None
    for line in run.stdout.splitlines():
        m = re.search(r"arch = (sm_\w+)", line)
        if m:
            arch, fn = m.group(1), None
            continue
        m = re.search(r"Function : (\S+)", line)
        if m:
            fn = m.group(1)
            for old, new in renames:
                fn = fn.replace(old, new)
            bodies.setdefault((arch, fn), []).append([])
            continue
        m = re.match(r"\s*/\*[0-9a-f]{4}\*/\s*(.*?)\s*;?\s*/\*", line)
        if fn and m:
            bodies[(arch, fn)][-1].append(m.group(1))
    if not bodies:
        sys.exit("sass_fingerprint: no kernels found")
    for (a, f), copies in sorted(bodies.items()):
        hashes = " ".join(hashlib.sha1("\n".join(b).encode()).hexdigest()[:12] for b in copies)
        print(a, f, hashes)


main()
