#!/usr/bin/env bash
# Download, into .whl/, the wheels that scripts/device_bench.sh installs on a lent GPU
# machine: its image has torch, transformers, accelerate and aiohttp, but not diffusers or
# the rest of what `flux2 bench` needs, and it cannot reach PyPI. Versions follow .venv,
# so the GPU runs the code the tests ran. The device tool carries at most 64 MiB with the
# working tree (about 13 MB): bitsandbytes (43 MB, for --quant nf4) only with --with-bnb.
set -euo pipefail
cd "$(dirname "$0")/.."
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
packages=("diffusers==$(version diffusers)" "typer==$(version typer)" "gguf==$(version gguf)"
          "platformdirs==$(version platformdirs)")
[[ "${1:-}" == "--with-bnb" ]] && packages+=("bitsandbytes==$(version bitsandbytes)")
rm -rf .whl && mkdir .whl
# The device's python3 is 3.12; pip matches each manylinux tag exactly, so name several.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl "${packages[@]}"
du -sh .whl
