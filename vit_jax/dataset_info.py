"""Dataset lookup for the input pipeline: which tfds dataset, is it prepared, how big.

Finds a dataset's tfds builder (preparing the bundled digits dataset on first use, never
downloading anything else), opens a split as records in a fixed file order, and turns a
missing or unknown dataset into a short `DatasetNotFoundError` that says how to prepare
it. `vit_jax.input_pipeline` builds the tf.data pipeline on top and re-exports the public
names (`DatasetInfo`, `DatasetNotFoundError`, `get_dataset_info`, `split_num_examples`).
The underscored helpers (`_tf`, `_builder`, `_open_split`, `_keys`) are shared with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fcntl
import functools
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from vit_jax import datasets  # registers the "digits" builder with tfds

_LOCAL_BUILDERS = frozenset({datasets.digits.Digits.name})  # built here, with no network


class DatasetNotFoundError(Exception):
    """A dataset that is not prepared in the data_dir (we never download one)."""


@dataclasses.dataclass
class DatasetInfo:
    """What the training loop needs to know about a dataset.

    Attributes:
      num_classes: number of labels.
      num_examples: split name → examples (the splits the dataset was prepared with).
      class_names: the label names, if the dataset has them.
      image_channels: channels as stored (1: grayscale; the pipeline always yields 3).
    """

    num_classes: int
    num_examples: dict[str, int]
    class_names: list[str] | None
    image_channels: int


@functools.cache
def _tf() -> Any:
    """Imports TensorFlow (~6 s, so only when data is needed), hidden from accelerators."""
    import tensorflow as tf

    # TF must not reserve GPU/TPU memory that JAX needs: the input pipeline runs on CPU.
    for kind in ("GPU", "TPU"):
        with contextlib.suppress(RuntimeError, ValueError):  # already initialised / no kind
            tf.config.set_visible_devices([], kind)
    return tf


def _missing_message(name: str, data_dir: str) -> str:
    message = (
        f"Dataset {name!r} is not prepared in data_dir {data_dir!r}, and vit-jax never "
        f"downloads data while training. Prepare it once with:\n"
        f"  tfds build {name} --data_dir {data_dir}\n"
        "(or set config.data_dir to where it is prepared)."
    )
    if name.split("/")[0].split(":")[0] == "imagenet2012":
        manual = os.path.join(data_dir, "downloads", "manual")
        message += (
            "\nImageNet cannot be downloaded automatically: first place "
            f"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in {manual}"
        )
    return message


def _unknown_message(name: str, data_dir: str | None) -> str:
    """A few lines (not tfds' catalogue of hundreds): close names, data_dir, how to prepare."""
    where = data_dir or tfds.core.constants.DATA_DIR  # tfds' default when None
    names = tfds.list_builders(with_community_datasets=False)  # local registry, no network
    close = difflib.get_close_matches(name.split("/")[0].split(":")[0], names, n=3)
    guess = f"did you mean {', '.join(map(repr, close))}?" if close else "no known name is close."
    message = f"Unknown tfds dataset {name!r} (data_dir searched: {where!r}); {guess}\n"
    if close and close[0] in _LOCAL_BUILDERS:
        return message + f"{close[0]!r} is bundled: vit-jax prepares it on first use."
    return message + (
        "Set config.dataset to a tfds name (https://www.tensorflow.org/datasets/catalog) "
        "and prepare it once with:\n"
        f"  tfds build {close[0] if close else 'NAME'} --data_dir {where}"
    )


def _builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The tfds builder of `name`; prepares the bundled datasets (digits) if needed."""
    _tf()  # hide accelerators before tfds imports TF on its own
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:  # its message lists every tfds dataset
        raise DatasetNotFoundError(_unknown_message(name, data_dir)) from None
    if builder.name in _LOCAL_BUILDERS and not builder.is_prepared():
        root = os.fspath(builder.data_dir_root)
        os.makedirs(root, exist_ok=True)
        # Several processes of one run may start on an empty data_dir: one builds.
        with open(os.path.join(root, f".{name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            builder = tfds.builder(name, data_dir=data_dir)
            if not builder.is_prepared():
                builder.download_and_prepare()
    return builder


def _open_split(builder: tfds.core.DatasetBuilder, split: str) -> tuple[Any, int]:
    """The records of `split` in a fixed order, images still encoded, and their count."""
    read_config = tfds.ReadConfig(try_autocache=False, skip_prefetch=True)
    read_config.options.deterministic = True
    try:
        ds = builder.as_dataset(
            split=split,
            shuffle_files=False,
            decoders={_keys(builder)[0]: tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
    except AssertionError as err:  # tfds' way of saying "no files here"
        if builder.is_prepared():
            raise
        root = os.fspath(builder.data_dir_root)
        raise DatasetNotFoundError(_missing_message(builder.name, root)) from err
    n = int(ds.cardinality())
    if n < 0:  # unknown / infinite: the position bookkeeping needs the true size
        n = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
    if n == 0:
        raise ValueError(f"Split {split!r} of {builder.name!r} is empty.")
    return ds, n


def _keys(builder: tfds.core.DatasetBuilder) -> tuple[str, str]:
    keys = builder.info.supervised_keys
    return tuple(keys) if keys and len(keys) == 2 else ("image", "label")


def get_dataset_info(dataset: str, data_dir: str | None) -> DatasetInfo:
    """Facts about `dataset`; prepares the bundled digits dataset if needed.

    Args:
      dataset: a tfds name ("digits", "cifar10", "imagenet2012", ...).
      data_dir: the tfds data_dir; None for tfds' default.

    Returns:
      The dataset's DatasetInfo.

    Raises:
      DatasetNotFoundError: the dataset is unknown or not prepared in data_dir.
    """
    builder = _builder(dataset, data_dir)
    image_key, label_key = _keys(builder)
    label = builder.info.features[label_key]
    num_examples = {name: split.num_examples for name, split in builder.info.splits.items()}
    if not num_examples:  # no metadata: not prepared (raises) or tfds.testing.mock_data
        num_examples = {s: _open_split(builder, s)[1] for s in ("train", "validation", "test")}
    names = list(label.names) if isinstance(label, tfds.features.ClassLabel) else None
    return DatasetInfo(
        num_classes=int(label.num_classes),
        num_examples=num_examples,
        class_names=names,
        image_channels=int(builder.info.features[image_key].shape[-1]),
    )


def split_num_examples(dataset: str, data_dir: str | None, split: str) -> int:
    """Examples in `split`, which may be a slice such as "train[:90%]"."""
    return _open_split(_builder(dataset, data_dir), split)[1]
