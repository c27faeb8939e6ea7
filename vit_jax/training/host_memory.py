"""Keep freed host memory in the process, so XLA:CPU steps stop page-faulting.

Why: XLA:CPU gives every execution of a compiled step one scratch ("preallocated temp")
buffer that holds all its intermediates: 70.6 MB for one ViT-Ti/16 block's forward and
backward at batch 16, far more for a whole train step. glibc's malloc serves blocks above
32 MB (and any large block of a worker thread's 64 MB arena) with a fresh `mmap` and
returns them with `munmap` at `free`, so every step the kernel hands out and zeroes the
whole buffer again, one 4 KiB page fault at a time (17,246 faults per block step,
`strace` shows the mmap/munmap pair). Measured on the 2-core box: the Ti/16 block's
fwd+bwd went from 151 to 133 ms with the faults gone (benchmarks/CPU_PERFORMANCE.md).

`retain_freed_memory` sets glibc's malloc to one arena, no mmap for large blocks and no
trimming, so a freed step buffer is reused by the next step. The price: the process
keeps its peak heap instead of returning it to the OS. It must run before JAX creates
its CPU client (its worker threads pick their arena at their first allocation), which is
why the command-line entry points call it first. Set VIT_JAX_KEEP_HOST_MEMORY=0 to skip.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt(3) parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER = -1  # mallopt(3): M_TRIM_THRESHOLD = -1 disables trimming
ENV_VAR = "VIT_JAX_KEEP_HOST_MEMORY"


def retain_freed_memory() -> bool:
    """Tunes glibc malloc to reuse freed memory (see the module docstring).

    Returns:
      True if the settings were applied; False where they do not apply (not Linux/glibc,
      or disabled by VIT_JAX_KEEP_HOST_MEMORY=0).
    """
    if os.environ.get(ENV_VAR, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (musl has no such symbol: not glibc)
    except (OSError, AttributeError):
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)
