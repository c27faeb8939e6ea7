"""Set-up for every test directory (tests/, parity/): runs before their conftests."""

import contextlib
import importlib.util
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

# Measured seconds per test (tests/update_durations.py writes the file and owns its format).
DURATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests", "durations.txt")
SLOW_SECONDS = 1.5  # a test measured at this or more is `slow`: the fast tier skips it


def read_durations() -> dict[str, float]:
    """{test id: measured seconds} (tests/update_durations.py's reader)."""
    spec = importlib.util.spec_from_file_location(
        "update_durations", os.path.join(os.path.dirname(DURATIONS), "update_durations.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_durations(DURATIONS)


def pytest_collection_modifyitems(config, items):
    """Marks the slow tests, and orders the test files longest first.

    Slow: measured at SLOW_SECONDS or more, or sharing such a test's parametrized module
    fixture (its cost lands on whichever of them runs first: parity's per-case fixtures).
    Order: the 2 xdist workers take whole files in this order (`--dist loadfile
    --no-loadscope-reorder`); with the long files first, neither waits long for the other
    at the end. Tests keep their order within a file.
    """
    seconds = read_durations()
    slow = {item.nodeid for item in items if seconds.get(item.nodeid, 0.0) >= SLOW_SECONDS}
    expensive = {shared for item in items if item.nodeid in slow
                 for shared in module_fixture_params(item)}
    for item in items:
        if item.nodeid in slow or expensive & module_fixture_params(item):
            item.add_marker(pytest.mark.slow)
    per_file: dict[str, float] = {}
    for item in items:
        file = item.nodeid.split("::")[0]
        per_file[file] = per_file.get(file, 0.0) + seconds.get(item.nodeid, 0.0)
    items.sort(key=lambda item: -per_file[item.nodeid.split("::")[0]])  # stable


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
