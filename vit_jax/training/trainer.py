"""The training and evaluation loop (the library of `python -m vit_jax.train`).

`train_and_evaluate(config, workdir)` owns the loop; the step functions it compiles are
in `vit_jax.training.steps`. The parallel layout is chosen once (`config.parallelism`,
see `vit_jax.training.parallel`): "jit" shards the batch over a device mesh, "fsdp" also
shards the parameters and optimizer state, "pmap" maps the same `train_step` body with an
explicit `lax.pmean`. State is checkpointed with orbax; a run restarted with the same
command resumes from the latest checkpoint in `workdir` and, since the data order and
dropout RNG are functions of the step, continues exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from configs import default as default_config
from vit_core.errors import ConfigError, TrainingError
from vit_jax.data import dataset_info, input_pipeline
from vit_jax.model import vit
from vit_jax.tools import linear_fewshot
from vit_jax.training import parallel, processes, reporting, run_plan
from vit_jax.training.evaluation import evaluate_split
from vit_jax.training.optim import create_optimizer
from vit_jax.training.state import CheckpointStore, TrainState
from vit_jax.training.steps import make_eval_step, make_train_step
from vit_jax.weights import checkpoint, pretrained


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       origin: run_plan.Origin | None = None) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its latest checkpoint) and evaluates.

    How long and on which splits follow `vit_jax.training.run_plan`'s rules (printed in one line;
    `config` is changed in place to what the run uses). A run stopped by SIGTERM or a
    first Ctrl-C (SIGINT) saves its current step and returns {"preempted_at_step": N} or
    {"interrupted_at_step": N}; the same call resumes it.

    A workdir whose run already finished is not trained or evaluated again: its
    `metrics.json` is returned as it is (`python -m vit_jax.evaluate` re-evaluates).

    Args:
      config: a locked ConfigDict from `configs/`.
      workdir: checkpoints, TensorBoard events, `config.json` and `metrics.json` go here.
      origin: the config file and the fields the command line set (the CLI passes them);
        None: every value counts as the config file's.

    Returns:
      The final metrics (also written to `workdir/metrics.json`).

    Raises:
      vit_core.errors.UserError: a config, dataset, checkpoint, workdir or disk problem,
        or non-finite metrics (`TrainingError`); the message says what to do.
    """
    t_start = time.time()
    layout = parallel.create_layout(config)
    layout.check_batch_size(config.batch_size, config.grad_accum_steps, what="batch_size")
    layout.check_batch_size(config.eval_batch_size, 1, what="eval_batch_size")
    info = dataset_info.get_dataset_info(config.dataset, config.data_dir)
    if info.image_channels not in (1, 3, 4):
        raise ConfigError(
            f"Dataset {config.dataset!r} has {info.image_channels}-channel images; the input "
            "pipeline takes 1 (grayscale), 3 (RGB) or 4 (RGBA, alpha dropped) channels.")
    if info.summary:  # a folder: its classes and split sizes, once per run
        print(info.summary, flush=True)
    plan = run_plan.resolve(
        config, info.num_examples,
        lambda split: dataset_info.split_num_examples(config.dataset, config.data_dir, split),
        origin or run_plan.Origin())
    print(f"vit_jax.train: {plan.describe()}", flush=True)
    total_steps = plan.total_steps
    init_path = use_init_checkpoint_options(config)
    # The spec checks the image size against the patch size (before the workdir is touched).
    model = vit.model_from_config(config.model, info.num_classes, config.image_size)
    # After the init checkpoint set its options: the model that actually trains.
    print(f"vit_jax.train: ViT variant {config.model.variant!r} ({describe_model(model)}) "
          f"on dataset {config.dataset!r}; {jax.process_count()} process(es), "
          f"{jax.device_count()} {jax.default_backend()} device(s); workdir {workdir}",
          flush=True)
    tx, schedule = create_optimizer(config, total_steps)
    # Refuses a workdir of another config; fields it predates count as their defaults.
    store = CheckpointStore(workdir, config, defaults=default_config.get_config())
    metrics_path = os.path.join(store.workdir, "metrics.json")
    if store.latest_step() == total_steps and os.path.exists(metrics_path):
        store.close()
        print(f"The run in {workdir} already finished (step {total_steps}); its metrics are "
              f"in {metrics_path}. To evaluate again: python -m vit_jax.evaluate "
              f"--checkpoint {workdir}", flush=True)
        with open(metrics_path) as f:
            return json.load(f)

    def init_state(pretrained):
        return TrainState.create(model, tx, config, pretrained=pretrained)

    # A full disk (checkpoints, history, events) is one error line; resuming loses nothing.
    with store.disk_full_is_user_error():
        state_shapes = jax.eval_shape(init_state, None)  # shapes only, nothing allocated
        state = store.restore_latest(state_shapes, layout)
        if state is None:
            state = layout.init_state(init_state, pretrained_params(config, model, init_path))
        start_step = int(layout.step_of(state))

        train_step = layout.compile_train_step(
            make_train_step(model, tx, schedule, config, axis_name=layout.axis_name))
        eval_fn = layout.compile_eval_step(make_eval_step(model))
        fewshot_eval = linear_fewshot.evaluator_from_config(config, model)  # None: off
        fewshot_result: dict[str, float] = {}
        train_iter = input_pipeline.create_train_iter(
            config, global_batch_size=config.batch_size, start_step=start_step,
            process_index=jax.process_index(), process_count=jax.process_count())
        reporter = reporting.Reporter(workdir, total_steps, config.batch_size, start_step)
        # Only around the loop: a Ctrl-C before or after it is run_cli's one line.
        with processes.stop_signals(workdir) as stop_requested:
            pending: list[tuple[int, dict[str, jax.Array]]] = []
            step = start_step
            for step in range(start_step + 1, total_steps + 1):
                state, metrics = train_step(state, layout.shard_batch(next(train_iter)))
                pending.append((step, metrics))
                is_last = step == total_steps
                signal_name = None if is_last else stop_requested(step)
                stop = signal_name is not None
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
                                f"Non-finite training metrics at step {s}: {m}. Stopped; the last "
                                f"good checkpoint (step {store.latest_step()}) is kept in "
                                f"{workdir}. Lower the learning rate or check the input data.")
                    reporter.train(host, log=must_log)
                if (config.eval_split and config.eval_every_steps
                        and step % config.eval_every_steps == 0 and not is_last):
                    result = evaluate_split(eval_fn, state.params, config, config.eval_split,
                                            layout)
                    reporter.eval(step, config.eval_split, result)
                if fewshot_eval and (is_last or step % config.fewshot.every_steps == 0):
                    accuracies = fewshot_eval(layout.unreplicate(state.params))
                    fewshot_result = linear_fewshot.summarize(accuracies)
                    reporter.fewshot(step, fewshot_eval.dataset, fewshot_result)
                if must_save:
                    store.save(step, layout.host_state(state))
                if stop:
                    store.wait()
                    reporter.close()
                    store.close()
                    if signal_name == "SIGINT":
                        print(f"Interrupted (Ctrl-C) at step {step}: checkpoint saved in "
                              f"{workdir}; rerun the same command to resume.", flush=True)
                        return {"interrupted_at_step": step}
                    print(f"Preempted (SIGTERM): checkpoint saved at step {step}. Run the same "
                          "command to resume.", flush=True)
                    return {"preempted_at_step": step}
        store.wait()
        params = state.params
        final: dict[str, Any] = {"step": step, "total_steps": total_steps}
        for name, split in (("eval", config.eval_split), ("test", config.test_split)):
            if split:
                result = evaluate_split(eval_fn, params, config, split, layout)
                reporter.eval(step, split, result)
                final[name] = {"split": split, **result}
        if fewshot_result:
            final["fewshot"] = {"dataset": fewshot_eval.dataset, **fewshot_result}
        final.update(reporter.summary(), wall_time_s=time.time() - t_start,
                     compiles=layout.trace_count())
        if jax.process_index() == 0:
            with open(metrics_path + ".tmp", "w") as f:
                json.dump(final, f, indent=2)
            os.replace(metrics_path + ".tmp", metrics_path)  # never a half-written file
        reporter.close()
        store.close()
        return final


def use_init_checkpoint_options(config: ml_collections.ConfigDict) -> str | None:
    """Finds `config.init_checkpoint` and sets the model options it implies on `config`.

    A released name (e.g. "vit_base_patch16_224.augreg_in21k_ft_in1k", "i1k-s16-300ep")
    or a path both work (`vit_jax.weights.pretrained.resolve`); the architecture options of the
    checkpoint (variant, patch size, classifier, posemb) replace the config's, and each
    change is printed. The head, image size and pre-logits stay fine-tuning choices.

    Args:
      config: the run's config (changed in place).

    Returns:
      The local `.npz` path, or None when training from scratch.
    """
    if not config.init_checkpoint:
        return None
    search_dirs = [config.init_checkpoint_dir] if config.init_checkpoint_dir else []
    path, options = pretrained.resolve(config.init_checkpoint, search_dirs)
    for key in ("variant", "patch_size", "classifier", "posemb", "num_registers",
                "layer_norm_eps", "gelu_approximate"):
        if key in options and key in config.model and config.model[key] != options[key]:
            print(f"init_checkpoint {config.init_checkpoint}: model.{key}={options[key]!r} "
                  f"(the config had {config.model[key]!r})", flush=True)
            config.model[key] = options[key]
    return path


def pretrained_params(config: ml_collections.ConfigDict, model: vit.VisionTransformer,
                      path: str | None) -> Any:
    """Released weights adapted to this model, or None (random init) without a path.

    Args:
      config: the run's config (image size, scan, reinit_head).
      model: the model to train.
      path: the `.npz` that `use_init_checkpoint_options` found, or None.

    Returns:
      The parameter tree, or None.
    """
    if path is None:
        return None
    init = vit.param_shapes(model, config.image_size)
    init = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), init)  # zero head, posemb shape
    loaded = checkpoint.load_npz(path, scan=config.model.scan)
    return checkpoint.adapt_pretrained(loaded, init, reinit_head=config.reinit_head,
                                       grid=model.spec.grid)


def describe_model(model: vit.VisionTransformer) -> str:
    """The model's sizes in words, e.g. "width 768, depth 12, 12 heads, patch 16".

    Args:
      model: the module.

    Returns:
      One line for logs.
    """
    spec = model.spec
    return (f"width {spec.hidden_size}, depth {spec.num_layers}, {spec.num_heads} heads, "
            f"patch {spec.patch_size}")
