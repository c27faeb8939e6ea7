"""Set-up for every test directory (tests/, parity/): runs before their conftests."""

import contextlib

# PyTorch's CUDA wheels bring triton, whose native library crashes the process (SIGSEGV in
# `import triton`) when TensorFlow was loaded first; loaded first, both work. torch imports
# triton lazily (e.g. when an optimizer is built), so load it before any test imports TF.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401
