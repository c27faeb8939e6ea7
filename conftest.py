"""Set-up for every test directory (tests/, parity/): runs before their conftests."""

import contextlib
import os
import shutil
import tempfile

import pytest

# PyTorch's CUDA wheels bring triton, whose native library crashes the process (SIGSEGV in
# `import triton`) when TensorFlow was loaded first; loaded first, both work. torch imports
# triton lazily (e.g. when an optimizer is built), so load it before any test imports TF.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

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

# The tests a measured run found slow (tests/update_slow_list.py writes the list).
SLOW_LIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests", "slow_tests.txt")


def pytest_collection_modifyitems(config, items):
    """Marks `slow` every test that tests/slow_tests.txt lists, and the tests that share
    a listed test's parametrized module fixture: its cost is paid by whichever of them
    runs first (parity's per-case fixtures)."""
    if not os.path.exists(SLOW_LIST):
        return
    with open(SLOW_LIST) as f:
        slow = {line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")}
    listed = [item for item in items if item.nodeid in slow]
    expensive = {shared for item in listed for shared in module_fixture_params(item)}
    for item in items:
        if item.nodeid in slow or expensive & module_fixture_params(item):
            item.add_marker(pytest.mark.slow)


def module_fixture_params(item) -> set:
    """(module, fixture, parameter index) of each module-scoped parametrized fixture."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return set()
    defs = item._fixtureinfo.name2fixturedefs  # pytest has no public accessor for scopes
    return {(item.module.__name__, name, index) for name, index in callspec.indices.items()
            if name in defs and defs[name][-1].scope == "module"}


def pytest_unconfigure(config):
    if OWN_CACHE and not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
