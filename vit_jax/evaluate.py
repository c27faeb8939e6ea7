"""Evaluate a trained model: `python -m vit_jax.evaluate --checkpoint CKPT [--config CFG]`.

CKPT is a training workdir (its `config.json` and latest orbax checkpoint) or an
official-layout `.npz` (a released checkpoint or one written by `save_npz`), whose
architecture is read off the array shapes; `--model NAME` instead takes a released model
by name (`vit_jax.pretrained`, downloaded into the cache on first use). `load_model` is
shared by the predict and visualize tools.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from vit_core import npz
from vit_core.errors import CheckpointError, ConfigError, DatasetError, run_cli
from vit_core.files import read_official
from vit_jax import (
    checkpoint,
    cli,
    dataset_info,
    hub,
    input_pipeline,
    models,
    parallel,
    pretrained,
    run_plan,
    state,
)
from vit_jax.steps import make_eval_step


@dataclasses.dataclass
class LoadedModel:
    """A model ready for inference."""

    model: models.VisionTransformer
    params: Any
    image_size: int
    class_names: list[str] | None
    config: ml_collections.ConfigDict | None  # the training config (workdirs only)


def _class_names(dataset: str | None, data_dir: str | None, num_classes: int) -> list[str] | None:
    """Class names from the dataset's tfds metadata, when it is known and available."""
    if not dataset:
        return None
    try:
        names = dataset_info.get_dataset_info(dataset, data_dir).class_names
    except DatasetError:  # metadata is a nicety: a missing dataset must not block inference
        return None
    return names if names and len(names) == num_classes else None


def load_model(path: str, *, dataset: str | None = None, data_dir: str | None = None,
               step: int | None = None, **overrides: Any) -> LoadedModel:
    """Loads a workdir checkpoint, an official `.npz` or a HF / timm model directory.

    Args:
      path: a training workdir, a `.npz` file, or a directory with `config.json` and
        `model.safetensors` as transformers' `save_pretrained` or timm's `save_for_hf`
        write them (converted on the fly, `vit_jax.hub.convert`).
      dataset: tfds name for class names (workdirs know their own; a HF directory's
        `id2label` is used when no dataset is given).
      data_dir: tfds data_dir for the metadata.
      step: a workdir's checkpoint step (default: the newest).
      **overrides: extra `VisionTransformer` options (e.g. gelu_approximate, dtype).

    Returns:
      A `LoadedModel`.

    Raises:
      CheckpointError: a missing or unusable checkpoint, or a step that is not there.
    """
    labels = None
    if os.path.isdir(path) and hub.is_model_dir(path):
        flat, spec, labels = hub.read_model_dir(path)
    elif os.path.isdir(path):
        return _load_workdir(path, data_dir=data_dir, step=step, **overrides)
    elif not os.path.exists(path):
        raise CheckpointError(f"No checkpoint at {path} (expected a workdir or a .npz file).")
    else:
        flat, spec = read_official(path)  # any layout it reads, with the spec file beside it
    if step is not None:
        raise ConfigError(f"{path} is not a training workdir: it holds one model, no steps.")
    arch = {k: overrides.pop(k) for k in list(overrides) if k not in models.RUN_OPTIONS}
    spec = spec.replace(**arch) if arch else spec
    # A fixed sin-cos posemb fits any size: such a file does not say; the spec's is 224.
    image_size, num_classes = spec.image_size[0], spec.num_classes
    model = models.VisionTransformer(spec, **overrides)
    params = npz.unflatten(flat)
    checkpoint.check_params(params, models.param_shapes(model))
    names = _class_names(dataset, data_dir, num_classes) if dataset else labels
    return LoadedModel(model, params, image_size, names, None)


def _load_workdir(workdir: str, *, data_dir: str | None, step: int | None = None,
                  **overrides: Any) -> LoadedModel:
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise CheckpointError(f"{workdir} is not a vit_jax workdir (no config.json).")
    config = ml_collections.ConfigDict(state.read_workdir_config(config_path))
    # Onto this process's device, whatever topology trained it (e.g. 2 processes).
    latest = state.restore_params(os.path.join(os.path.abspath(workdir), "checkpoints"), step)
    if latest is None:
        raise CheckpointError(f"{workdir} has no checkpoint yet.")
    _, params = latest
    dataset_dir = data_dir or config.get("data_dir")
    head = params["head"]["bias"].shape[0] if "head" in params else 0
    model = models.model_from_config(config.model, head, config.image_size)
    arch = {k: overrides.pop(k) for k in list(overrides) if k not in models.RUN_OPTIONS}
    if arch:
        model = model.clone(spec=model.spec.replace(**arch))
    if overrides:
        model = model.clone(**overrides)
    if config.model.scan:  # inference uses the per-block layout
        model = model.clone(scan=False)
        params = checkpoint.npz_dict_to_params(checkpoint.params_to_npz_dict(params))
    names = _class_names(config.dataset, dataset_dir, head)
    return LoadedModel(model, params, config.image_size, names, config)


def predict_logits(loaded: LoadedModel, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits (N, num_classes) of preprocessed images (N, S, S, 3) in [-1, 1]."""
    apply = jax.jit(lambda p, x: loaded.model.apply({"params": p}, x))
    out = [np.asarray(apply(loaded.params, jnp.asarray(images[i:i + batch_size])))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


def evaluate_split(
    eval_fn: Callable[..., Any], params: Any, config: ml_collections.ConfigDict, split: str,
    layout: parallel.Layout,
) -> dict[str, float]:
    """Top-1/top-5/loss over every example of `split` exactly once (padding masked).

    Args:
      eval_fn: `layout.compile_eval_step(make_eval_step(model))`.
      params: the parameters, placed by `layout`.
      config: dataset, data_dir, image size and `eval_batch_size`.
      split: a tfds split name.
      layout: the parallel layout.

    Returns:
      `top1`, `top5`, `loss` (means) and `num_examples`.
    """
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


def evaluate_checkpoint(path: str, config: ml_collections.ConfigDict | None = None
                        ) -> dict[str, dict[str, float]]:
    """Evaluates a workdir or `.npz` on the eval and test splits of its (or `config`'s) data.

    Args:
      path: a training workdir or an official `.npz`.
      config: the dataset and splits to use; None: the workdir's own config.

    Returns:
      Split name -> `evaluate_split` results.

    Raises:
      CheckpointError / ConfigError / DatasetError: what the message says.
    """
    loaded = load_model(path)
    config = config or loaded.config
    if config is None:
        raise ConfigError("A .npz carries no dataset: pass --config to say what to evaluate on.")
    if config is not loaded.config:
        config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
        config.image_size = loaded.image_size
    layout = parallel.create_layout(config)
    eval_fn = layout.compile_eval_step(make_eval_step(loaded.model))
    params = loaded.params
    if layout.axis_name:
        params = jax.tree.map(lambda x: np.stack([x] * jax.local_device_count()), params)
    return {split: evaluate_split(eval_fn, params, config, split, layout)
            for split in dict.fromkeys(filter(None, (config.eval_split, config.test_split)))}


def main(argv: list[str]) -> None:
    """The body of `python -m vit_jax.evaluate` (flags already parsed).

    Args:
      argv: positional arguments (none are taken).
    """
    del argv
    cli.quiet_logs()

    def run() -> None:
        checkpoint_path, name = flags.FLAGS.checkpoint, flags.FLAGS.model
        if (checkpoint_path is None) == (name is None):
            raise ConfigError("Pass either --checkpoint (a workdir or .npz) or --model (a "
                              "released name), not both and not neither.")
        config = cli.load_config_flag()
        if config is not None:  # its splits chosen as training chooses them (run_plan)
            info = dataset_info.get_dataset_info(config.dataset, config.data_dir)
            splits, _ = run_plan.resolve_splits(config, info.num_examples,
                                                run_plan.Origin.from_flag(flags.FLAGS["config"]))
            for field, split in splits.items():
                config[field] = split
        results = evaluate_checkpoint(checkpoint_path or pretrained.resolve(name)[0], config)
        for split, r in results.items():
            print(f"{split}: top-1 {r['top1']:.4f}  top-5 {r['top5']:.4f}  loss {r['loss']:.4f}"
                  f"  ({r['num_examples']} images)")
        print(json.dumps(results))

    run_cli(run)


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Config file: dataset and splits to "
                                    "evaluate (default: the workdir's own config).")
    flags.DEFINE_string("checkpoint", None, "A training workdir or an official .npz file.")
    flags.DEFINE_string("model", None, "Or a released model by name (vit_jax/pretrained.py, "
                        "or hf-hub:ORG/REPO), downloaded into $VIT_JAX_CACHE on first use.")
    app.run(main, flags_parser=cli.parse_flags)
