"""vit-jax: the Vision Transformer in JAX/Flax (see README.md and ARCHITECTURE.md).

The modules directly in this package are the commands (`python -m vit_jax.train`, ...;
`cli.py` is what they share); the library lives in the packages: `model/` (the Flax
model), `data/`, `training/`, `weights/` and `tools/`.
"""

import os

# TensorFlow (imported by tensorflow-datasets for the input pipeline) prints oneDNN and
# absl banners from C++ at import, twice; set before its first import. TF only decodes and
# augments images here, where its oneDNN kernels gain nothing and would make the pipeline's
# float results depend on the CPU. A user's own settings win.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
