#!/usr/bin/env bash
# Downloads the Debian packages the engine builds against (and their library dependencies)
# as .deb files into .deps/debs/ (git-ignored), for a GPU machine that reaches no package
# registry: scripts/gpu_check.sh unpacks them there with dpkg -x into .deps/root/ and builds
# against that prefix. Run here, then carry .deps/debs with the device call.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps/debs
cd .deps/debs
packages=(
  libsentencepiece-dev libsentencepiece0 libprotobuf-lite32 libyaml-cpp-dev libyaml-cpp0.7
  libfmt-dev libfmt9 doctest-dev nlohmann-json3-dev libcli11-dev libopenblas-dev
  libopenblas0 libopenblas0-pthread libopenblas-pthread-dev libgfortran5 pkgconf pkgconf-bin
  libpkgconf3
  # tokenizer.json: PCRE2 for the pre-tokenizer regexes, ICU for NFC normalization.
  libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libicu-dev libicu72
)
apt-get download "${packages[@]}"
du -sh .
