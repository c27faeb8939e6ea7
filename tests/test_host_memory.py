"""`retain_freed_memory` stops the per-step page faults of XLA:CPU executions."""

import os
import subprocess
import sys

import pytest

from vit_jax.training import host_memory

_PROBE = """
import resource, sys
from vit_jax.training.host_memory import retain_freed_memory
applied = retain_freed_memory()  # before JAX creates its CPU client
import jax, jax.numpy as jnp

def step(x):
    y = jnp.exp(x @ x)  # (1024, 1024) intermediates, fresh buffers every execution
    return (jnp.tanh(y @ x) @ y).sum()

x = jnp.full((1024, 1024), 1e-3)
compiled = jax.jit(step).lower(x).compile()
for _ in range(3):
    compiled(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    compiled(x).block_until_ready()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


def _faults_per_step(keep: str) -> tuple[bool, int]:
    # One CPU device, as the command-line tools run (conftest sets 8 fake ones).
    env = {**os.environ, host_memory.ENV_VAR: keep, "XLA_FLAGS": ""}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    return out[-2] == "True", int(out[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_retained_memory_removes_page_faults_of_repeated_steps():
    applied, faults = _faults_per_step("1")
    assert applied
    skipped, faults_default = _faults_per_step("0")
    assert not skipped
    # Without it every execution faults its buffers in again (thousands of 4 KiB pages);
    # with it the freed buffers are reused.
    assert faults_default > 2000, faults_default
    assert faults * 20 < faults_default, (faults, faults_default)


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv(host_memory.ENV_VAR, "0")
    assert host_memory.retain_freed_memory() is False
