"""Multi-host training: 2 local processes (gloo, 1 CPU device each) = 1 process, 2 devices.

Both runs are the real CLI in subprocesses with the same global batch and seed: the
2-process run (`--coordinator_address 127.0.0.1:PORT --num_processes 2 --process_id i`)
and a single process with 2 fake CPU devices, the same 2-way data-parallel computation.
Their final parameters are compared bit for bit (they are equal: the gradient all-reduce
over 2 participants is the same sum either way). The tests of what depends on the layout
run under "jit" (replicated state) and "fsdp" (state split over the 2 devices, so each
process holds and checkpoints half of it). A last test stops a 2-process run with SIGTERM
to one process, then with a Ctrl-C on the other (JAX's preemption notifier picks a step
both processes reach, each time) and resumes it.
"""

from __future__ import annotations

import json
import os
import re
import signal
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from _train_subprocess import (
    Trainer,
    free_port,
    logged_train_steps,
    subprocess_env,
    train_flags,
)

from conftest import assert_bit_identical
from vit_jax.weights import loading

# Every test here waits for 3 training processes (the notes measured ~3 min for the file).
pytestmark = pytest.mark.slow

# 16 steps of the digits config at 8x8, global batch 16; checkpoints at 8 and 16.
RUN: dict[str, Any] = dict(
    image_size=8, batch_size=16, num_train_steps=16, warmup_steps=2, checkpoint_every_steps=8,
    log_every_steps=8, sync_every_steps=4, eval_every_steps=0, eval_split="",
    test_split="test",  # evaluated at the end: checks the per-process eval rows and padding
)
# `two_runs` under the layouts a test is about; "fsdp" is marked slow. Every user of the
# fixture names its layouts: a test without would start the same "jit" runs a second time.
EVERY_MESH_LAYOUT = pytest.mark.parametrize(
    "two_runs", ["jit", pytest.param("fsdp", marks=pytest.mark.slow)], indirect=True)
JIT_ONLY = pytest.mark.parametrize("two_runs", ["jit"], indirect=True)
# The same run (the fields changed here change no number), logged at every step.
PREEMPTED_RUN = RUN | dict(log_every_steps=1, sync_every_steps=1, checkpoint_every_steps=20)


def load_params(workdir: str) -> dict[str, Any]:
    """Params of the latest checkpoint, onto this process's first device.

    Written out here, independently of `loading.load_model` (and `state.restore_params`),
    which test_multihost_workdir_loads_for_inference checks against it.
    """
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add("state", ocp.args.StandardRestore, ocp.StandardCheckpointHandler())
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                    handler_registry=registry,
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    step = manager.latest_step()
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          manager.item_metadata(step)["state"])
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))
    manager.close()
    return jax.tree.map(np.asarray, restored["state"]["params"])


def multihost(flags: list[str], tmp_path, name: str, env: dict[str, str]) -> list[Trainer]:
    """Starts process 0 and 1 of a 2-process run; each logs the files it opens to write."""
    port = str(free_port())
    procs = []
    for i in range(2):
        procs.append(Trainer(
            [*flags, "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2",
             "--process_id", str(i)],
            log_path=str(tmp_path / f"{name}{i}.log"),
            env=env | {"VIT_TEST_WRITE_LOG": str(tmp_path / f"{name}{i}.writes")}))
    return procs


def written(tmp_path, name: str) -> set[str]:
    """Basenames of the files a process opened for writing (Python `open`)."""
    try:
        with open(tmp_path / f"{name}.writes") as f:
            return {os.path.basename(line.strip()) for line in f}
    except FileNotFoundError:
        return set()


@pytest.fixture(scope="module")
def two_runs(request, tmp_path_factory, digits_dir, jax_cache):
    """The 2-process run and the 1-process, 2-device run, side by side (3 processes).

    Under the `config.parallelism` given by indirect parametrization (`EVERY_MESH_LAYOUT`).
    """
    run = RUN | dict(parallelism=request.param)
    root = tmp_path_factory.mktemp(f"multihost_{run['parallelism']}")
    multi, single = str(root / "multi"), str(root / "single")
    procs = []
    try:
        procs = multihost(train_flags(multi, digits_dir, **run), root, "proc",
                          subprocess_env(1, jax_cache))
        procs.append(Trainer(train_flags(single, digits_dir, **run),
                             log_path=str(root / "single.log"), env=subprocess_env(2, jax_cache)))
        for p in procs:
            assert p.wait() == 0, p.tail()
    finally:
        for p in procs:
            p.kill()
    return root, multi, single, procs


@EVERY_MESH_LAYOUT
def test_two_processes_train_exactly_like_one_process_with_two_devices(two_runs):
    _, multi, single, procs = two_runs
    assert "2 process(es), 2 cpu device(s)" in procs[0].output()
    assert "1 process(es), 2 cpu device(s)" in procs[2].output()
    assert_bit_identical(load_params(multi), load_params(single))
    with open(os.path.join(multi, "metrics.json")) as f:
        multi_metrics = json.load(f)
    with open(os.path.join(single, "metrics.json")) as f:
        single_metrics = json.load(f)
    assert multi_metrics["step"] == 16 and multi_metrics["compiles"] == 1
    # Evaluation: each process scores its rows; every test image counted exactly once.
    assert multi_metrics["test"] == single_metrics["test"]
    assert multi_metrics["test"]["num_examples"] == 360
    assert multi_metrics["train"]["loss"] == single_metrics["train"]["loss"]


@JIT_ONLY
def test_only_process_0_writes_metrics_config_and_history(two_runs):
    root, multi, _, procs = two_runs
    # metrics.json and config.json are written as .tmp, then renamed.
    mine = {"metrics.json.tmp", "config.json.tmp", "history.jsonl"}
    assert mine <= written(root, "proc0")
    assert not mine & written(root, "proc1"), written(root, "proc1")
    assert os.path.exists(os.path.join(multi, "config.json"))
    assert logged_train_steps(multi) == [8, 16]  # one writer: no duplicate lines
    events = [f for f in os.listdir(multi) if f.startswith("events.out.tfevents")]
    assert len(events) == 1
    assert "step     16/16" in procs[0].output() and "step     16/16" not in procs[1].output()


@EVERY_MESH_LAYOUT
def test_both_processes_write_each_checkpoint(two_runs):
    _, multi, _, _ = two_runs
    assert sorted(os.listdir(os.path.join(multi, "checkpoints"))) == ["16", "8"]
    for step in ("8", "16"):
        state = os.path.join(multi, "checkpoints", step, "state")
        # orbax's multi-host OCDBT layout: one sub-database per process that saved.
        assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(state))
        assert os.path.exists(os.path.join(state, "..", "commit_success.txt"))


@EVERY_MESH_LAYOUT
def test_multihost_workdir_loads_for_inference(two_runs):
    """One process loads what 2 processes saved (orbax's saved sharding names their devices)."""
    _, multi, _, _ = two_runs
    loaded = loading.load_model(multi)
    assert_bit_identical(loaded.params, load_params(multi))


def stopped_steps(procs: list[Trainer], pattern: str) -> int:
    """The one step every process reports stopping at (a line matching `pattern` (\\d+))."""
    stopped = {int(m) for p in procs for m in re.findall(pattern, p.output())}
    assert len(stopped) == 1, [p.tail() for p in procs]  # the same step on both
    return stopped.pop()


@JIT_ONLY
@pytest.mark.slow
@pytest.mark.usefixtures("sigint_reaches_children")
def test_sigterm_or_ctrl_c_on_one_process_stops_both_at_one_step_and_they_resume(
        two_runs, digits_dir, jax_cache, tmp_path):
    """SIGTERM to process 0 (a preemption notice), then a Ctrl-C on process 1 only (a
    terminal on one host): each time both processes save one step and stop; the same
    command resumes, and the result is the uninterrupted run's, bit for bit."""
    workdir = str(tmp_path / "wd")
    flags = train_flags(workdir, digits_dir, **PREEMPTED_RUN)
    slow = subprocess_env(1, jax_cache, VIT_TEST_STEP_DELAY="0.2")
    procs = []
    try:
        procs = multihost(flags, tmp_path, "term", slow)
        procs[0].wait_until(lambda: max(logged_train_steps(workdir), default=0) >= 5, "step 5")
        procs[0].signal(signal.SIGTERM)  # only process 0 is told; both must stop
        assert [p.wait() for p in procs] == [0, 0], [p.tail() for p in procs]
        first = stopped_steps(procs, r"Preempted \(SIGTERM\): checkpoint saved at step (\d+)")
        assert 5 <= first < RUN["num_train_steps"]
        assert str(first) in os.listdir(os.path.join(workdir, "checkpoints"))

        procs = multihost(flags, tmp_path, "int", slow)
        procs[0].wait_until(
            lambda: max(logged_train_steps(workdir), default=0) >= first + 2, f"step {first + 2}")
        procs[1].signal(signal.SIGINT)  # Ctrl-C on process 1's terminal only
        assert [p.wait() for p in procs] == [0, 130], [p.tail() for p in procs]
        for p in procs:
            assert f"Resuming from the checkpoint at step {first} " in p.output()
            assert "Traceback" not in p.output(), p.tail()
        second = stopped_steps(procs, r"(?:Preempted \(SIGTERM\): checkpoint saved at|"
                                      r"Interrupted \(Ctrl-C\) at) step (\d+)")
        assert "Interrupted (Ctrl-C) at step" in procs[1].output()
        assert first + 2 <= second < RUN["num_train_steps"]
        assert str(second) in os.listdir(os.path.join(workdir, "checkpoints"))

        procs = multihost(flags, tmp_path, "again", subprocess_env(1, jax_cache))
        assert [p.wait() for p in procs] == [0, 0], [p.tail() for p in procs]
        for p in procs:
            assert f"Resuming from the checkpoint at step {second} " in p.output()
    finally:
        for p in procs:
            p.kill()
    assert logged_train_steps(workdir) == list(range(1, RUN["num_train_steps"] + 1))
    _, _, single, _ = two_runs  # uninterrupted, 1 process with 2 devices
    assert_bit_identical(load_params(workdir), load_params(single))
