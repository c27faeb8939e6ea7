"""Set-up for every test directory (tests/, parity/): runs before their conftests."""

import contextlib

# PyTorch's CUDA wheels bring triton, whose native library crashes the process (SIGSEGV in
# `import triton`) when TensorFlow was loaded first; loaded first, both work. torch imports
# triton lazily (e.g. when an optimizer is built), so load it before any test imports TF.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

import os
import shutil
import tempfile

# One XLA compilation cache for the whole test session: the pytest processes (both xdist
# workers, which inherit this environment) and every subprocess a test starts. Many tests
# train the same tiny programs (a 5-step digits run compiles in ~4 s and loads from the
# cache in ~0.3 s). It lives for the session only, so a run never depends on an earlier one.
# `JAX_COMPILATION_CACHE_DIR=... pytest` keeps a cache of your own across runs.
OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vit-jax-tests-xla-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # every program
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"


def pytest_unconfigure(config):
    if OWN_CACHE and not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
