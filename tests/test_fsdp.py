"""The "fsdp" layout: state split over 8 fake CPU devices, same losses as "jit", resharding.

(a) 20 steps of the digits config under "fsdp" log the same losses as under "jit" (the
    replicated state): within `LOSS_RTOL`, see there.
(b) XLA's memory analysis of the compiled train step: each device holds 1/8 of the
    parameter and optimizer bytes (plus the few arrays no dimension of which 8 divides).
(c) A checkpoint written with 8 devices resumes in a process with 4 (orbax reads each
    array into the new shardings) and continues with the uninterrupted run's losses.
(d) 2 processes = 1 process with 2 devices: `tests/test_multihost.py`, parametrized.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import numpy as np
import pytest
from _train_subprocess import Trainer, subprocess_env, train_flags
from jax.sharding import PartitionSpec

from conftest import assert_bit_identical, tiny_digits_config
from vit_jax.model import vit as models
from vit_jax.training import optim, parallel, steps, trainer
from vit_jax.training.state import TrainState

# The digits config at 8x8, global batch 32, a loss logged at every step, checkpoints at
# 10 and 20. Every field `tiny_digits_config` changes is set here too (except the
# resumable eval_batch_size), so that the CLI given these flags runs the same config.
RUN = dict(image_size=8, batch_size=32, num_train_steps=20, warmup_steps=2,
           log_every_steps=1, sync_every_steps=1, checkpoint_every_steps=10,
           eval_every_steps=0, eval_split="", test_split="")
# Under "fsdp" the gradient sum over the devices is a reduce-scatter instead of an
# all-reduce and the partitioner may reorder other reductions, so a loss may differ from
# "jit" in its last bits; AdamW then moves the two runs apart by a few float32 ulps per
# step. 1e-6 relative is ~8 ulps of a loss near 2.3, far below any real difference (a
# wrong shard or a missing gradient term changes the loss from the first steps on, by
# > 1e-3). On this CPU backend the two runs were bit-identical.
LOSS_RTOL = 1e-6


def train_losses(workdir: str) -> dict[int, float]:
    """Step -> loss of the train records in `workdir/history.jsonl`."""
    with open(os.path.join(workdir, "history.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def test_fsdp_rule_splits_the_largest_divisible_dimension():
    assert parallel.fsdp_spec((32, 4, 8), 8) == PartitionSpec("data", None, None)
    assert parallel.fsdp_spec((10, 64), 8) == PartitionSpec(None, "data")
    assert parallel.fsdp_spec((1, 17, 32), 8) == PartitionSpec(None, None, "data")
    assert parallel.fsdp_spec((16, 16), 8) == PartitionSpec("data", None)  # the first
    assert parallel.fsdp_spec((10,), 8) == PartitionSpec()  # replicated
    assert parallel.fsdp_spec((), 8) == PartitionSpec()


def compile_train_step(config) -> tuple[Any, Any]:
    """The layout's placed state (shapes only: nothing allocated) and compiled step."""
    model = models.model_from_config(config.model, 10)
    tx, schedule = optim.create_optimizer(config, config.num_train_steps)
    layout = parallel.create_layout(config)
    state = layout.restore_target(jax.eval_shape(lambda: TrainState.create(model, tx, config)))
    batch = {"image": jax.ShapeDtypeStruct((config.batch_size, 8, 8, 3), np.float32,
                                           sharding=layout.batch_sharding),
             "label": jax.ShapeDtypeStruct((config.batch_size,), np.int32,
                                           sharding=layout.batch_sharding)}
    step = layout.compile_train_step(steps.make_train_step(model, tx, schedule, config))
    return state, step.lower(state, batch).compile()


def test_fsdp_keeps_an_eighth_of_the_state_bytes_per_device(digits_dir):
    """(b) From the compiled step: argument bytes per device = state shards + batch shard."""
    assert jax.device_count() == 8
    per_device = {}
    for name in ("jit", "fsdp"):
        config = tiny_digits_config(digits_dir, **RUN, parallelism=name)
        state, compiled = compile_train_step(config)
        memory = compiled.memory_analysis()
        shard_bytes = sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize
                          for x in jax.tree.leaves(state))
        batch_bytes = (config.batch_size // 8) * (8 * 8 * 3 * 4 + 4)  # one device's share
        assert memory.argument_size_in_bytes == shard_bytes + batch_bytes, name
        assert memory.alias_size_in_bytes == shard_bytes, name  # the state is donated
        per_device[name] = memory.argument_size_in_bytes - batch_bytes
    # Whole on every device: only arrays no dimension of which 8 divides, i.e. the
    # counters (step, optimizer counts) and the head bias (10 classes) and its moments.
    whole = {x.shape for x in jax.tree.leaves(state) if x.sharding.is_fully_replicated}
    assert whole == {(), (10,)}
    ratio = per_device["fsdp"] / per_device["jit"]
    assert 1 / 8 <= ratio < 1 / 8 * 1.01, per_device


def test_fsdp_places_released_weights_shard_by_shard(digits_dir):
    """Fine-tuning: host (numpy) weights land in their fsdp shards with their values."""
    config = tiny_digits_config(digits_dir, **RUN, parallelism="fsdp")
    model = models.model_from_config(config.model, 10)
    tx, _ = optim.create_optimizer(config, config.num_train_steps)
    rng = np.random.default_rng(0)
    pretrained = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype),
                              models.param_shapes(model, config.image_size))
    layout = parallel.create_layout(config)
    state = layout.init_state(
        lambda p: TrainState.create(model, tx, config, pretrained=p), pretrained)
    assert_bit_identical(jax.device_get(state.params), pretrained)
    for x in jax.tree.leaves(state):
        assert x.sharding.spec == parallel.fsdp_spec(x.shape, 8)


@pytest.fixture(scope="module")
def runs(digits_dir, tmp_path_factory):
    """20 steps under "jit" and under "fsdp", in this process (8 fake CPU devices)."""
    root = tmp_path_factory.mktemp("fsdp")
    for name in ("jit", "fsdp"):
        result = trainer.train_and_evaluate(
            tiny_digits_config(digits_dir, **RUN, parallelism=name), str(root / name))
        assert result["compiles"] == 1, name
    return root


@pytest.mark.slow
def test_fsdp_trains_with_the_losses_of_jit(runs):
    """(a) The same losses, step by step, as the replicated layout."""
    jit, fsdp = train_losses(str(runs / "jit")), train_losses(str(runs / "fsdp"))
    assert sorted(fsdp) == list(range(1, 21))
    np.testing.assert_allclose([fsdp[s] for s in sorted(fsdp)], [jit[s] for s in sorted(jit)],
                               rtol=LOSS_RTOL, atol=0)


@pytest.mark.slow
def test_fsdp_checkpoint_of_8_devices_resumes_on_4(runs, digits_dir, tmp_path):
    """(c) The CLI in a 4-device process resumes the 8-device run from its step 10."""
    workdir = tmp_path / "wd"
    shutil.copytree(runs / "fsdp", workdir)
    shutil.rmtree(workdir / "checkpoints" / "20")  # as if stopped after step 10's save
    flags = train_flags(str(workdir), digits_dir, **RUN, parallelism="fsdp")
    with Trainer(flags, log_path=str(tmp_path / "resume.log"), env=subprocess_env(4)) as p:
        assert p.wait() == 0, p.tail()
        assert "1 process(es), 4 cpu device(s)" in p.output()
        assert "Resuming from the checkpoint at step 10 " in p.output()
    uninterrupted = train_losses(str(runs / "fsdp"))
    with open(workdir / "history.jsonl") as f:  # rows 11..20 are the 4-device run's now
        records = [r for r in map(json.loads, f) if r["split"] == "train"]
    assert [r["step"] for r in records] == list(range(1, 21))  # one row per step
    resumed = {r["step"]: r["loss"] for r in records if r["step"] > 10}
    np.testing.assert_allclose([resumed[s] for s in range(11, 21)],
                               [uninterrupted[s] for s in range(11, 21)],
                               rtol=LOSS_RTOL, atol=0)
