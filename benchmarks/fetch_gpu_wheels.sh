#!/usr/bin/env bash
# Downloads (here, where PyPI is reachable) the pure-Python packages that vit_jax imports
# and the GPU machine's image lacks, into benchmarks/.whl (git-ignored by the `.whl/` rule),
# for `benchmarks/gpu.sh` to install there. ~6 MB; run once from the repo root:
#   bash benchmarks/fetch_gpu_wheels.sh
# The image (KINDS.md): Python 3.12, jax 0.11.2 + jax-cuda13 plugin, flax, optax, orbax,
# chex, etils, torch 2.11 (CUDA); missing: ml-collections and tensorflow-datasets (imported
# by vit_jax.train through vit_jax.input_pipeline) with their small dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=benchmarks/.whl
mkdir -p "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$dest" \
  ml-collections==1.1.0 tensorflow-datasets==4.9.10 tensorflow-metadata==1.21.0 \
  googleapis-common-protos==1.76.0 protobuf==7.36.2 immutabledict==4.3.1 toml==0.10.2
# promise is published as an sdist only: build its (pure-Python) wheel here.
python3 -m pip wheel -q --no-deps -w "$dest" promise==2.3
ls -la "$dest"
