"""Training and evaluation loop: `python -m vit_jax.train --config CONFIG --workdir DIR`.

`train_and_evaluate(config, workdir)` owns the loop. The parallel layout is chosen once
(`config.parallelism`, see `vit_jax.parallel`): "jit" shards the batch over a device
mesh, "pmap" maps the same `train_step` body with an explicit `lax.pmean`. State is
checkpointed with orbax; a run restarted with the same command resumes from the latest
checkpoint in `workdir` and, since the data order and dropout RNG are functions of the
step, continues exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vit_jax import checkpoint, models, parallel
from vit_jax.cli import (
    TrainingError,
    _install_sigterm_handler,
    initialize_distributed,
    parse_flags,
    run_cli,
)
from vit_jax.host_memory import retain_freed_memory
from vit_jax.optim import create_optimizer, create_schedule
from vit_jax.state import CheckpointStore, TrainState

__all__ = [  # the public API, with the names re-exported from optim and cli
    "TrainingError", "create_model", "create_optimizer", "create_schedule", "cross_entropy",
    "evaluate", "initialize_distributed", "main", "make_eval_step", "make_train_step",
    "parse_flags", "run_cli", "total_train_steps", "train_and_evaluate",
]

logger = logging.getLogger("vit_jax")


# ---------------------------------------------------------------------------- model
def create_model(config: ml_collections.ConfigDict, num_classes: int) -> models.VisionTransformer:
    """The model described by `config.model`."""
    m = config.model
    overrides = dict(
        classifier=m.classifier, representation_size=m.representation_size,
        dropout_rate=m.dropout_rate, attention_dropout_rate=m.attention_dropout_rate,
        stochastic_depth=m.stochastic_depth, gelu_approximate=m.gelu_approximate,
        attention_impl=m.attention_impl, remat=m.remat, scan=m.scan,
        dtype=jnp.dtype(m.dtype), head_bias_init=m.head_bias_init,
    )
    if m.patch_size is not None:
        overrides["patch_size"] = m.patch_size
    return models.create_model(m.variant, num_classes=num_classes, **overrides)


# ------------------------------------------------------------------------ the steps
def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """Per-example softmax cross-entropy with optional label smoothing."""
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)  # (B,)


def make_train_step(
    model: models.VisionTransformer, tx: optax.GradientTransformation,
    schedule: optax.Schedule, config: ml_collections.ConfigDict, axis_name: str | None = None,
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the pure step `(state, batch) -> (state, metrics)`.

    One optimizer update per call. With `grad_accum_steps > 1` the batch is split into
    that many micro-batches whose gradients are averaged (`lax.scan`), so only one
    micro-batch of activations is alive at a time. Dropout randomness is
    `fold_in(seed, step)`: a resumed run draws the same masks. Under pmap, `axis_name`
    names the device axis and gradients/metrics are averaged with `lax.pmean`.
    """
    accum = config.grad_accum_steps
    base_rng = jax.random.key(config.seed + 1)

    def loss_fn(params, images, labels, rng):
        logits = model.apply({"params": params}, images, train=True, rngs={"dropout": rng})
        loss = cross_entropy(logits, labels, config.label_smoothing).mean()
        return loss, (logits.argmax(-1) == labels).mean()

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        rng = jax.random.fold_in(base_rng, state.step)
        if axis_name is not None:  # a different dropout mask on every device
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        images, labels = batch["image"], batch["label"]
        if accum == 1:
            (loss, acc), grads = grad_fn(state.params, images, labels, rng)
        else:
            micro = jax.tree.map(lambda x: x.reshape(accum, -1, *x.shape[1:]), (images, labels))

            def body(carry, xs):
                i, (img, lab) = xs
                (loss, acc), g = grad_fn(state.params, img, lab, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, carry, (g, loss, acc)), None

            zeros = (jax.tree.map(jnp.zeros_like, state.params), 0.0, 0.0)
            sums, _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
            grads, loss, acc = jax.tree.map(lambda s: s / accum, sums)
        if axis_name is not None:
            grads, loss, acc = jax.lax.pmean((grads, loss, acc), axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "accuracy": acc, "grad_norm": optax.tree.norm(grads),
                   "learning_rate": schedule(state.step)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_eval_step(model: models.VisionTransformer) -> Callable[..., dict[str, jax.Array]]:
    """Builds `(params, batch) -> sums` of correct top-1/top-5, loss and real examples."""

    def eval_step(params, batch):
        logits = model.apply({"params": params}, batch["image"], train=False)
        mask = batch["mask"]
        top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]  # (B, 5)
        labels = batch["label"]
        return {
            "top1": jnp.sum((top5[:, 0] == labels) * mask),
            "top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
            "loss": jnp.sum(cross_entropy(logits, labels, 0.0) * mask),
            "count": jnp.sum(mask),
        }

    return eval_step


def evaluate(
    eval_fn: Callable[..., Any], params: Any, config: ml_collections.ConfigDict, split: str,
    layout: parallel.Layout,
) -> dict[str, float]:
    """Top-1/top-5/loss over every example of `split` exactly once (padding masked)."""
    from vit_jax import input_pipeline

    totals: dict[str, float] = {}
    it = input_pipeline.create_eval_iter(
        config, split, global_batch_size=config.eval_batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    for batch in it:
        sums = jax.device_get(eval_fn(params, layout.shard_batch(batch)))  # blocks every batch
        for key, value in layout.unreplicate(sums).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    n = max(totals.get("count", 0.0), 1.0)
    return {"top1": totals["top1"] / n, "top5": totals["top5"] / n,
            "loss": totals["loss"] / n, "num_examples": int(totals["count"])}


# ------------------------------------------------------------------------ the loop
def total_train_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
    """`num_train_steps`, or `num_epochs` converted to optimizer steps."""
    if config.num_epochs is not None:
        return math.ceil(config.num_epochs * num_train_examples / config.batch_size)
    return config.num_train_steps


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its latest checkpoint) and evaluates.

    Args:
      config: a locked ConfigDict from `configs/`.
      workdir: checkpoints, TensorBoard events, `config.json` and `metrics.json` go here.

    Returns:
      The final metrics (also written to `workdir/metrics.json`).
    """
    # Imported here, not at the top: the steps above (used by the benchmark) need no
    # TensorFlow, tfds or TensorBoard.
    from vit_jax import dataset_info, input_pipeline, reporting

    t_start = time.time()
    layout = parallel.create_layout(config)
    layout.check_batch_size(config.batch_size, config.grad_accum_steps, what="batch_size")
    layout.check_batch_size(config.eval_batch_size, 1, what="eval_batch_size")
    info = dataset_info.get_dataset_info(config.dataset, config.data_dir)
    if info.image_channels not in (1, 3, 4):
        raise ValueError(
            f"Dataset {config.dataset!r} has {info.image_channels}-channel images; the input "
            "pipeline takes 1 (grayscale), 3 (RGB) or 4 (RGBA, alpha dropped) channels.")
    total_steps = total_train_steps(config, dataset_info.split_num_examples(
        config.dataset, config.data_dir, config.train_split))
    model = create_model(config, info.num_classes)
    if config.image_size % model.patch_size:  # before the workdir is touched
        raise ValueError(
            f"config.image_size={config.image_size} is not divisible by the patch size "
            f"{model.patch_size} (config.model.patch_size, or that of variant "
            f"{config.model.variant!r}); e.g. use image_size="
            f"{max(1, round(config.image_size / model.patch_size)) * model.patch_size}.")
    tx, schedule = create_optimizer(config, total_steps)
    store = CheckpointStore(workdir, config)  # refuses a workdir of another config

    def init_state(pretrained):
        return TrainState.create(model, tx, config, pretrained=pretrained)

    state_shapes = jax.eval_shape(init_state, None)  # shapes only, nothing allocated
    state = store.restore_latest(state_shapes, layout)
    if state is None:
        state = layout.init_state(init_state, _pretrained(config, model))
    start_step = int(layout.step_of(state))

    train_step = layout.compile_train_step(
        make_train_step(model, tx, schedule, config, axis_name=layout.axis_name))
    eval_fn = layout.compile_eval_step(make_eval_step(model))
    train_iter = input_pipeline.create_train_iter(
        config, global_batch_size=config.batch_size, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count())
    reporter = reporting.Reporter(workdir, total_steps, config.batch_size, start_step)
    preempted = _install_sigterm_handler()

    pending: list[tuple[int, dict[str, jax.Array]]] = []
    step = start_step
    for step in range(start_step + 1, total_steps + 1):
        state, metrics = train_step(state, layout.shard_batch(next(train_iter)))
        pending.append((step, metrics))
        is_last = step == total_steps
        stop = preempted(step) and not is_last
        must_save = is_last or stop or step % config.checkpoint_every_steps == 0
        must_log = is_last or step % config.log_every_steps == 0
        # Blocking on the metrics regularly keeps CPU collectives from deadlocking, and
        # NaNs are caught before a checkpoint could store them.
        if must_save or must_log or len(pending) >= config.sync_every_steps:
            host = [(s, layout.unreplicate(jax.device_get(m))) for s, m in pending]
            pending.clear()
            for s, m in host:
                if not all(np.isfinite(v).all() for v in m.values()):
                    store.wait()
                    raise TrainingError(
                        f"Non-finite training metrics at step {s}: {m}. Stopped; the last good "
                        f"checkpoint (step {store.latest_step()}) is kept in {workdir}. Lower "
                        "the learning rate or check the input data.")
            reporter.train(host, log=must_log)
        if config.eval_every_steps and step % config.eval_every_steps == 0 and not is_last:
            result = evaluate(eval_fn, state.params, config, config.eval_split, layout)
            reporter.eval(step, config.eval_split, result)
        if must_save:
            store.save(step, layout.host_state(state))
        if stop:
            store.wait()
            reporter.close()
            store.close()
            print(f"Preempted (SIGTERM): checkpoint saved at step {step}. Run the same command "
                  "to resume.", flush=True)
            return {"preempted_at_step": step}
    store.wait()
    params = state.params
    final: dict[str, Any] = {"step": step, "total_steps": total_steps}
    for name, split in (("eval", config.eval_split), ("test", config.test_split)):
        if split:
            result = evaluate(eval_fn, params, config, split, layout)
            reporter.eval(step, split, result)
            final[name] = {"split": split, **result}
    final.update(reporter.summary(), wall_time_s=time.time() - t_start,
                 compiles=layout.trace_count())
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "metrics.json"), "w") as f:
            json.dump(final, f, indent=2)
    reporter.close()
    store.close()
    return final


def _pretrained(config: ml_collections.ConfigDict, model: models.VisionTransformer):
    """Released weights adapted to this model, or None (random init) without a path."""
    if not config.init_checkpoint:
        return None
    init = models.param_shapes(model, config.image_size)
    init = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), init)  # zero head, posemb shape
    loaded = checkpoint.load_npz(config.init_checkpoint, scan=config.model.scan)
    return checkpoint.adapt_pretrained(loaded, init, reinit_head=config.reinit_head)


# ------------------------------------------------------------------------------ main
def main(argv: list[str]) -> None:
    from absl import flags
    from absl import logging as absl_logging

    del argv
    FLAGS = flags.FLAGS
    absl_logging.set_verbosity(absl_logging.WARNING)  # the progress line says enough
    retain_freed_memory()  # before JAX's CPU client exists: see vit_jax/host_memory.py
    initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    config = FLAGS.config
    print(f"vit_jax.train: {config.model.variant} on {config.dataset}, "
          f"{jax.process_count()} process(es), {jax.device_count()} {jax.default_backend()} "
          f"device(s), workdir {FLAGS.workdir}", flush=True)
    run_cli(lambda: train_and_evaluate(config, FLAGS.workdir))


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Checkpoints, metrics and events go here.")
    flags.DEFINE_string("coordinator_address", None, "Multi-host: 'host:port' of process 0.")
    flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
    flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
    flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main, flags_parser=parse_flags)
