#!/usr/bin/env bash
# Installs the llama.cpp side of the engine benchmark into evals/llama-cpp/.venv:
# llama-cpp-python (pinned in requirements.txt), built from its source distribution so that
# llama.cpp is compiled for this machine's CPU (-DGGML_NATIVE=ON). Every file pip fetches, the
# build tools included, is checked against the sha256 hashes in requirements*.txt
# (--require-hashes). Safe to run again: it does nothing when the pinned version is installed.
# Takes about 10-15 minutes on 2 cores (compiling llama.cpp); a few seconds afterwards.
set -euo pipefail
cd "$(dirname "$0")"
HERE=$PWD
VENV=$HERE/.venv
VERSION=0.3.36   # keep in step with requirements.txt

log() { printf '\033[1m[llama-cpp]\033[0m %s\n' "$*"; }

installed() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
assert version("llama_cpp_python") == sys.argv[1]
import llama_cpp  # the compiled library loads
PY
}

if installed; then
  log "llama-cpp-python $VERSION present in $VENV"
  exit 0
fi

command -v python3 >/dev/null || { echo "python3 (>= 3.11) is required" >&2; exit 1; }
command -v cc >/dev/null && command -v c++ >/dev/null || {
  echo "a C/C++ compiler is required (apt-get install build-essential)" >&2; exit 1; }

log "creating $VENV"
python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
# Only PyPI, only the pinned files: ignore any extra local wheel folders from the environment.
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_NO_BINARY PIP_ONLY_BINARY || true

log "installing the build tools (scikit-build-core, cmake, ninja; hash-checked wheels)"
"${PIP[@]}" install --require-hashes --only-binary :all: -r requirements-build.txt

log "building llama-cpp-python $VERSION from source (compiles llama.cpp; ~10-15 min on 2 cores)"
# --no-build-isolation: build with the hash-checked tools above instead of letting pip fetch
# unpinned ones. GGML_NATIVE=ON: -march=native, this CPU's full instruction set (e.g. AVX-512).
# --no-cache-dir: never reuse a wheel cached by an earlier build (possibly for another CPU).
export CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
"${PIP[@]}" install --require-hashes --no-build-isolation --no-binary llama-cpp-python --no-cache-dir \
  -r requirements.txt

installed || { echo "llama-cpp-python did not install correctly" >&2; exit 1; }
log "done: $("$VENV/bin/python" -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__)')"
