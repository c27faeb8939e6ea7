"""Evaluate a trained model: `python -m vit_jax.evaluate --checkpoint CKPT [--config CFG]`.

CKPT is a training workdir (its `config.json` and latest orbax checkpoint) or an
official-layout `.npz` (a released checkpoint or one written by `save_npz`), whose
architecture is read off the array shapes. `load_model` is shared by the predict and
visualize tools.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_jax import checkpoint, models


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
        from vit_jax import dataset_info

        names = dataset_info.get_dataset_info(dataset, data_dir).class_names
    except Exception:  # metadata is a nicety: a missing dataset must not block inference
        return None
    return names if names and len(names) == num_classes else None


def load_model(path: str, *, dataset: str | None = None, data_dir: str | None = None,
               **overrides: Any) -> LoadedModel:
    """Loads a workdir checkpoint or an official `.npz` for inference.

    Args:
      path: a training workdir, or a `.npz` file.
      dataset: tfds name for class names (workdirs know their own).
      data_dir: tfds data_dir for the metadata.
      **overrides: extra `VisionTransformer` options (e.g. gelu_approximate, dtype).

    Returns:
      A `LoadedModel`.

    Raises:
      FileNotFoundError / checkpoint.CheckpointError: missing or unusable checkpoint.
    """
    if os.path.isdir(path):
        return _load_workdir(path, data_dir=data_dir, **overrides)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint at {path} (expected a workdir or a .npz file).")
    flat = checkpoint.read_npz(path)
    arch = checkpoint.infer_architecture(flat)
    image_size, num_classes = arch.pop("image_size"), arch.pop("num_classes")
    model = models.VisionTransformer(num_classes=num_classes, **arch, **overrides)
    params = checkpoint.unflatten(flat)
    checkpoint.check_params(params, models.param_shapes(model, image_size))
    return LoadedModel(model, params, image_size, _class_names(dataset, data_dir, num_classes),
                       None)


def _load_workdir(workdir: str, *, data_dir: str | None, **overrides: Any) -> LoadedModel:
    from vit_jax import state, train

    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{workdir} is not a vit_jax workdir (no config.json).")
    with open(config_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    # Onto this process's device, whatever topology trained it (e.g. 2 processes).
    latest = state.restore_params(os.path.join(os.path.abspath(workdir), "checkpoints"))
    if latest is None:
        raise FileNotFoundError(f"{workdir} has no checkpoint yet.")
    _, params = latest
    dataset_dir = data_dir or config.get("data_dir")
    head = params["head"]["bias"].shape[0] if "head" in params else 0
    model = train.create_model(config, head)
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


def main(argv: list[str]) -> None:
    from absl import flags

    from vit_jax import parallel, train

    del argv
    FLAGS = flags.FLAGS
    loaded = load_model(FLAGS.checkpoint)
    config = FLAGS.config or loaded.config
    if config is None:
        raise ValueError("A .npz carries no dataset: pass --config to say what to evaluate on.")
    if FLAGS.config is not None:
        config.unlock()
        config.image_size = loaded.image_size
    layout = parallel.create_layout(config)
    eval_fn = layout.compile_eval_step(train.make_eval_step(loaded.model))
    params = loaded.params
    if layout.axis_name:
        params = jax.tree.map(lambda x: np.stack([x] * jax.local_device_count()), params)
    results = {}
    for split in filter(None, {config.eval_split, config.test_split}):
        results[split] = train.evaluate(eval_fn, params, config, split, layout)
        print(f"{split}: top-1 {results[split]['top1']:.4f}  top-5 {results[split]['top5']:.4f}"
              f"  loss {results[split]['loss']:.4f}  ({results[split]['num_examples']} images)")
    print(json.dumps(results))


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file: dataset and splits to "
                                    "evaluate (default: the workdir's own config).")
    flags.DEFINE_string("checkpoint", None, "A training workdir or an official .npz file.")
    flags.mark_flag_as_required("checkpoint")

    # train's flag parser: `--config.<unknown field>` is one error line, not a traceback.
    from vit_jax.cli import parse_flags, run_cli

    app.run(lambda argv: run_cli(lambda: main(argv)), flags_parser=parse_flags)
