"""A trained model ready for inference, from wherever it is stored.

`load_model` takes a training workdir (its `config.json` and latest, or a given, orbax
checkpoint), an official-layout `.npz` (a released checkpoint or one written by
`save_npz`; its architecture is read off the array shapes and the spec file beside it) or
a Hugging Face / timm model directory (converted on the fly, `vit_jax.weights.hub`). It is
shared by evaluation, predict, visualize, analyze, fewshot and export; every file it
cannot use is a one-line `UserError` (a `CheckpointError`; a `WorkdirError` for a
workdir's broken `config.json`), so that no caller translates exceptions itself.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_core import npz
from vit_core.errors import CheckpointError, ConfigError, DatasetError
from vit_core.files import read_official
from vit_jax.data import dataset_info
from vit_jax.model import vit
from vit_jax.training import state
from vit_jax.weights import checkpoint, hub


@dataclasses.dataclass
class LoadedModel:
    """A model ready for inference."""

    model: vit.VisionTransformer
    params: Any
    image_size: int
    class_names: list[str] | None
    config: ml_collections.ConfigDict | None  # the training config (workdirs only)


def class_names_of(dataset: str | None, data_dir: str | None,
                   num_classes: int) -> list[str] | None:
    """Class names from the dataset's tfds metadata, when it is known and available.

    Args:
      dataset: a tfds name or "folder:PATH"; None: no names.
      data_dir: tfds data_dir for the metadata.
      num_classes: the model's head size (names of another count are not used).

    Returns:
      The names, or None.
    """
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
        write them (converted on the fly, `vit_jax.weights.hub.convert`).
      dataset: tfds name for class names (workdirs know their own; a HF directory's
        `id2label` is used when no dataset is given).
      data_dir: tfds data_dir for the metadata.
      step: a workdir's checkpoint step (default: the newest).
      **overrides: extra `VisionTransformer` options (e.g. gelu_approximate, dtype).

    Returns:
      A `LoadedModel`.

    Raises:
      CheckpointError: a missing or unusable checkpoint (not a workdir, `.npz` or model
        directory; a corrupt or unreadable file), or a step that is not there.
    """
    if os.path.isfile(path) and not path.endswith(".npz"):
        raise CheckpointError(
            f"{path} is not a checkpoint: expected a training workdir or a .npz.")
    try:
        return _load(path, dataset=dataset, data_dir=data_dir, step=step, **overrides)
    except (OSError, zipfile.BadZipFile) as e:  # corrupt file, unreadable workdir
        raise CheckpointError(f"Cannot load the checkpoint {path}: {e}") from None


def _load(path: str, *, dataset: str | None, data_dir: str | None, step: int | None,
          **overrides: Any) -> LoadedModel:
    """`load_model` without its translation of file errors."""
    labels = None
    if os.path.isdir(path) and hub.is_model_dir(path):
        flat, spec, labels = hub.read_model_dir(path)
    elif os.path.isdir(path):
        return load_workdir(path, data_dir=data_dir, step=step, **overrides)
    elif not os.path.exists(path):
        raise CheckpointError(f"No checkpoint at {path} (expected a workdir or a .npz file).")
    else:
        flat, spec = read_official(path)  # any layout it reads, with the spec file beside it
    if step is not None:
        raise ConfigError(f"{path} is not a training workdir: it holds one model, no steps.")
    arch = {k: overrides.pop(k) for k in list(overrides) if k not in vit.RUN_OPTIONS}
    spec = spec.replace(**arch) if arch else spec
    # A fixed sin-cos posemb fits any size: such a file does not say; the spec's is 224.
    image_size, num_classes = spec.image_size[0], spec.num_classes
    model = vit.VisionTransformer(spec, **overrides)
    params = npz.unflatten(flat)
    checkpoint.check_params(params, vit.param_shapes(model))
    names = class_names_of(dataset, data_dir, num_classes) if dataset else labels
    return LoadedModel(model, params, image_size, names, None)


def load_workdir(workdir: str, *, data_dir: str | None, step: int | None = None,
                 **overrides: Any) -> LoadedModel:
    """A training workdir's model and parameters, for inference.

    Args:
      workdir: the workdir (its `config.json` and `checkpoints/`).
      data_dir: tfds data_dir for the class names (default: the run's).
      step: the checkpoint step (default: the newest).
      **overrides: extra `VisionTransformer` options (architecture fields or run options).

    Returns:
      A `LoadedModel` with the training config; a `scan=True` run is unstacked.

    Raises:
      CheckpointError: not a workdir, no checkpoint yet, or no checkpoint of `step`.
    """
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
    model = vit.model_from_config(config.model, head, config.image_size)
    arch = {k: overrides.pop(k) for k in list(overrides) if k not in vit.RUN_OPTIONS}
    if arch:
        model = model.clone(spec=model.spec.replace(**arch))
    if overrides:
        model = model.clone(**overrides)
    if config.model.scan:  # inference uses the per-block layout
        model = model.clone(scan=False)
        params = checkpoint.npz_dict_to_params(checkpoint.params_to_npz_dict(params))
    names = class_names_of(config.dataset, dataset_dir, head)
    return LoadedModel(model, params, config.image_size, names, config)


def predict_logits(loaded: LoadedModel, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The model's logits of preprocessed images.

    Args:
      loaded: the model.
      images: (N, S, S, 3) in [-1, 1].
      batch_size: images per forward pass.

    Returns:
      (N, num_classes) logits.
    """
    apply = jax.jit(lambda p, x: loaded.model.apply({"params": p}, x))
    out = [np.asarray(apply(loaded.params, jnp.asarray(images[i:i + batch_size])))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


