"""Evaluation of a trained model on its dataset's splits (the library of `vit_jax.evaluate`).

`evaluate_split` runs a compiled eval step over every example of a split once (the
training loop calls it); `evaluate_checkpoint` evaluates a workdir or `.npz`;
`evaluate_model` is what `python -m vit_jax.evaluate` asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from vit_core.errors import ConfigError
from vit_jax.data import dataset_info, input_pipeline
from vit_jax.training import parallel, run_plan
from vit_jax.training.steps import make_eval_step
from vit_jax.weights import loading, pretrained


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
    loaded = loading.load_model(path)
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




def evaluate_model(checkpoint_path: str | None, name: str | None,
                   config: ml_collections.ConfigDict | None = None,
                   origin: run_plan.Origin | None = None) -> dict[str, dict[str, float]]:
    """Evaluates a workdir, `.npz` or released model on the splits a config chooses.

    Args:
      checkpoint_path: a training workdir or an official `.npz` (or None with `name`).
      name: a released model's name (`vit_jax.weights.pretrained`), or None.
      config: the dataset and splits to use, chosen as training chooses them
        (`vit_jax.training.run_plan`); None: the workdir's own config.
      origin: which of `config`'s fields the command line set.

    Returns:
      Split name -> `evaluate_split` results.

    Raises:
      ConfigError: neither or both of `checkpoint_path` and `name`; and what
        `evaluate_checkpoint` raises.
    """
    if (checkpoint_path is None) == (name is None):
        raise ConfigError("Pass either --checkpoint (a workdir or .npz) or --model (a "
                          "released name), not both and not neither.")
    if config is not None:  # its splits chosen as training chooses them (run_plan)
        info = dataset_info.get_dataset_info(config.dataset, config.data_dir)
        splits, _ = run_plan.resolve_splits(config, info.num_examples,
                                            origin or run_plan.Origin())
        for field, split in splits.items():
            config[field] = split
    return evaluate_checkpoint(checkpoint_path or pretrained.resolve(name)[0], config)
