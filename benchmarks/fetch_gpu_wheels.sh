#!/usr/bin/env bash
# Downloads (here, where PyPI is reachable) the pure-Python packages that the benchmark
# imports and the GPU machine's image lacks, into benchmarks/.whl (git-ignored by the
# `.whl/` rule), for `benchmarks/gpu.sh` to install there. Run once from the repo root:
#   bash benchmarks/fetch_gpu_wheels.sh
# The image (.library/device/KINDS.md): Python 3.12, jax 0.11.2 + jax-cuda13 plugin, flax,
# optax, orbax-checkpoint, chex, absl-py, PyYAML, torch 2.11 (CUDA). Missing: ml-collections
# (vit_jax.train / vit_jax.training.state). tensorflow-datasets is not needed: vit_jax.train imports
# the input pipeline lazily.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=benchmarks/.whl
rm -rf "$dest"
mkdir -p "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_17_x86_64 -d "$dest" ml-collections==1.1.0
ls -la "$dest"
