"""Data sources of the input pipeline: tfds names and image folders, found and opened.

A dataset is named by a string (config.dataset):
  * a tfds name ("digits", "cifar10", "imagenet2012", ...), read from config.data_dir,
    where it must have been prepared once (`python -m vit_jax.prepare NAME`); training never
    downloads. The bundled "digits" (`vit_jax/data/digits.py`) prepares itself on
    first use.
  * "folder:PATH", a folder of images, one subfolder per class
    (`vit_jax/data/folder.py`).

`open_split` gives a split's records (images still encoded) for `vit_jax.data.input_pipeline`,
`get_dataset_info` what the training loop needs, `prepare_dataset` prepares a tfds
dataset (the library call of `python -m vit_jax.prepare`). A missing or unknown dataset
raises `DatasetNotFoundError`, a `DatasetError` with a one-line message that says how to
prepare it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fcntl
import functools
import io
import os
import sys
from typing import Any

import numpy as np
import requests
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import downloader as tfds_downloader

from vit_core.errors import DatasetError
from vit_jax.data import digits, folder  # importing digits registers it with tfds

_LOCAL_BUILDERS = frozenset({digits.Digits.name})  # built here, with no network
# tfds retries a failed connection 10 times with exponential back-off (200 s of sleeps,
# 3.5 min measured offline) before it raises; 3 retries sleep 1.2 s and still ride out
# a dropped connection or a 5xx.
DOWNLOAD_RETRIES = 3
# Files a manual-download dataset needs in its manual_dir (tfds only says so in prose).
_MANUAL_FILES = {
    "imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
    "imagenet2012_subset": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
}


class DatasetNotFoundError(DatasetError):
    """A dataset that is unknown, or not prepared in the data_dir (training never downloads)."""


@dataclasses.dataclass
class DatasetInfo:
    """What the training loop needs to know about a dataset.

    Attributes:
      num_classes: number of labels.
      num_examples: split name → examples (the splits the dataset was prepared with).
      class_names: the label names, if the dataset has them.
      image_channels: channels as stored (1: grayscale; the pipeline always yields 3).
      summary: for a folder, one line with its classes and split sizes (for the tools that
        use its data to print); "" for a tfds dataset.
    """

    num_classes: int
    num_examples: dict[str, int]
    class_names: list[str] | None
    image_channels: int
    summary: str = ""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a dataset, opened for reading.

    Attributes:
      records: tf.data.Dataset of {"image": encoded bytes, "label": int64}, in a fixed order.
      num_examples: records in the split.
      image_feature: the tfds `Image` feature; `image_feature.decode_example(bytes)`
        decodes a record's image to uint8 (H, W, C).
    """

    records: Any
    num_examples: int
    image_feature: Any


@functools.cache
def import_tensorflow() -> Any:
    """Imports TensorFlow (~6 s, so only when data is needed), hidden from accelerators.

    Returns:
      The `tensorflow` module, with no GPU/TPU visible to it.
    """
    skip_keras = "tensorflow" not in sys.modules and "keras.src.optimizers" not in sys.modules
    if skip_keras:
        # TensorFlow's __init__ imports Keras's optimizers (2 of its ~6 s, with scikit-learn)
        # only to register them for SavedModel loading, which tf.data never does, and goes
        # on without them when that import fails. The marker goes right after, so Keras (and
        # tf.keras, which loads lazily) still imports normally for anyone who wants it.
        sys.modules["keras.src.optimizers"] = None  # type: ignore[assignment]
    try:
        import tensorflow as tf  # deferred: heavy, and only the data path needs it
    finally:
        if skip_keras and sys.modules.get("keras.src.optimizers", False) is None:
            del sys.modules["keras.src.optimizers"]

    # TF must not reserve GPU/TPU memory that JAX needs: the input pipeline runs on CPU.
    for kind in ("GPU", "TPU"):
        with contextlib.suppress(RuntimeError, ValueError):  # already initialised / no kind
            tf.config.set_visible_devices([], kind)
    return tf


def graph_fn(fn: Any) -> Any:
    """`fn`, for a tf.data transformation, traced as written: without AutoGraph.

    The pipeline's functions branch only on Python values (the config, static shapes);
    AutoGraph would parse and rewrite each of them and every tfds decoder they call
    (~2 s at each start of a training process) to find tensor conditions there are none of.

    Args:
      fn: a function of tensors.

    Returns:
      `fn`, marked for tf.data not to convert it.
    """
    return import_tensorflow().autograph.experimental.do_not_convert(fn)


def _base_name(name: str) -> str:
    return name.split("/")[0].split(":")[0]  # "imagenet2012/subset:1.0.0" → "imagenet2012"


def is_bundled(name: str) -> bool:
    """True for a dataset that vit-jax builds itself, with no download (digits)."""
    return _base_name(name) in _LOCAL_BUILDERS


def prepare_command(name: str, data_dir: str | None) -> str:
    """The shell command that prepares tfds dataset `name` into `data_dir`."""
    where = data_dir or tfds.core.constants.DATA_DIR  # tfds' default when None
    return f"python -m vit_jax.prepare {name} --data_dir {where}"


def _manual_dir(data_dir_root: str, manual_dir: str | None) -> str:
    return manual_dir or os.path.join(data_dir_root, "downloads", "manual")  # tfds' default


def _missing_message(name: str, data_dir: str) -> str:
    message = (
        f"Dataset {name!r} is not prepared in data_dir {data_dir!r} (training never "
        f"downloads); prepare it once with `{prepare_command(name, data_dir)}`, or set "
        "config.data_dir to where it is prepared."
    )
    files = _MANUAL_FILES.get(_base_name(name))
    if files:
        message += (f" It needs {' and '.join(files)} (from image-net.org) in "
                    f"{_manual_dir(data_dir, None)} or in a folder given by --manual_dir.")
    return message


def _unknown_message(name: str, data_dir: str | None) -> str:
    """One line (not tfds' catalogue of hundreds): close names, data_dir, how to prepare."""
    where = data_dir or tfds.core.constants.DATA_DIR
    names = tfds.list_builders(with_community_datasets=False)  # local registry, no network
    close = difflib.get_close_matches(_base_name(name), names, n=3)
    guess = f"did you mean {', '.join(map(repr, close))}?" if close else "no known name is close."
    message = f"Unknown tfds dataset {name!r} (data_dir searched: {where!r}); {guess} "
    if close and close[0] in _LOCAL_BUILDERS:
        return message + f"{close[0]!r} is bundled: vit-jax prepares it on first use."
    command = prepare_command(close[0] if close else "NAME", where)
    return message + (
        f"Prepare a tfds dataset once with `{command}`, or use {folder.PREFIX}PATH for a "
        "folder of your images."
    )


@functools.cache
def _folder_builder(path: str) -> folder.ImageFolder:
    """Scanned and checked once per process (every split and the info share it)."""
    return folder.ImageFolder(path)


def _tfds_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:  # its message lists every tfds dataset
        raise DatasetNotFoundError(_unknown_message(name, data_dir)) from None


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    # tfds' is_prepared() logs "Variant folder ... has no dataset_info.json" when there is
    # no folder at all; tfds renames a finished build into data_path, so absent = not yet.
    return os.path.isdir(builder.data_path) and builder.is_prepared()


def _download_and_prepare(
    name: str, data_dir: str | None, manual_dir: str | None, progress: bool
) -> tfds.core.DatasetBuilder:
    """Prepares tfds dataset `name` once (under a lock), with tfds' own printing kept quiet.

    Returns:
      The builder of the prepared dataset.
    """
    root = os.fspath(tfds.builder(name, data_dir=data_dir).data_dir_root)
    os.makedirs(root, exist_ok=True)
    # Several processes of one run may start on an empty data_dir: one prepares.
    with open(os.path.join(root, f".{_base_name(name)}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        builder = tfds.builder(name, data_dir=data_dir)
        if not _is_prepared(builder):
            # tfds prints "Downloading and preparing dataset Unknown size ..." to stdout and
            # draws nested tqdm bars (raw "\x1b[A" escapes in a log file): its bars only on
            # request (a terminal), its prints never; callers print their own summary.
            tfds.display_progress_bar(progress)
            config = tfds.download.DownloadConfig(manual_dir=manual_dir)
            try:
                with contextlib.redirect_stdout(io.StringIO()), _bounded_retries():
                    builder.download_and_prepare(download_config=config)
            except requests.exceptions.ConnectionError as e:  # offline, proxy, DNS (after retries)
                url = getattr(e.request, "url", None) or "its download URL"
                raise DatasetError(
                    f"Downloading {name!r} failed: cannot reach {url} ({type(e).__name__}); "
                    "check the network or proxy, then run the same command again (finished "
                    f"downloads are kept in {root}/downloads)."
                ) from None
            builder = tfds.builder(name, data_dir=data_dir)
    return builder


@contextlib.contextmanager
def _bounded_retries() -> Any:
    """tfds' downloads retry DOWNLOAD_RETRIES times within the block (not 10).

    tfds reads its module constant `MAX_RETRIES` when it opens each URL (tfds 4.9:
    `core/download/downloader.py`); no public option sets it. Without the constant (another
    tfds), tfds' own retries apply.
    """
    module = tfds_downloader
    if not hasattr(module, "MAX_RETRIES"):
        yield
        return
    before = module.MAX_RETRIES
    module.MAX_RETRIES = min(before, DOWNLOAD_RETRIES)
    try:
        yield
    finally:
        module.MAX_RETRIES = before


def _check_manual_files(builder: tfds.core.DatasetBuilder, manual_dir: str | None) -> None:
    """A manual-download dataset's files are in place (tfds fails late, in prose)."""
    if not builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        return
    where = _manual_dir(os.fspath(builder.data_dir_root), manual_dir)
    files = _MANUAL_FILES.get(builder.name)
    if files:
        missing = [f for f in files if not os.path.isfile(os.path.join(where, f))]
        if missing:
            raise DatasetNotFoundError(
                f"Dataset {builder.name!r} cannot be downloaded automatically: place "
                f"{' and '.join(missing)} (from image-net.org) in {where}, or pass "
                "--manual_dir DIR with the folder that holds them.")
    elif not os.path.isdir(where) or not os.listdir(where):
        instructions = " ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
        raise DatasetNotFoundError(
            f"Dataset {builder.name!r} needs files you download yourself in {where} (or "
            f"--manual_dir DIR): {instructions}")


def prepare_dataset(
    name: str, data_dir: str | None, *, manual_dir: str | None = None, progress: bool = False
) -> DatasetInfo:
    """Prepares a dataset for training (a no-op when it already is).

    Args:
      name: a tfds name, or "folder:PATH" (only scanned and checked: nothing to prepare).
      data_dir: the tfds data_dir to prepare into; None for tfds' default.
      manual_dir: where a manual-download dataset's files are (ImageNet's .tar files);
        None for `data_dir/downloads/manual`.
      progress: show tfds' progress bars (for a terminal).

    Returns:
      The prepared dataset's DatasetInfo.

    Raises:
      DatasetNotFoundError: the name is unknown, or a manual download's files are missing.
      DatasetError: the download failed (no network), or the folder is malformed.
    """
    if not name.startswith(folder.PREFIX):
        import_tensorflow()  # hide accelerators before tfds imports TF on its own
        builder = _tfds_builder(name, data_dir)
        if not _is_prepared(builder):
            _check_manual_files(builder, manual_dir)
            _download_and_prepare(name, data_dir, manual_dir, progress)
    return get_dataset_info(name, data_dir)


def _builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The builder of `name`; prepares the bundled datasets (digits) if needed."""
    import_tensorflow()  # hide accelerators before tfds imports TF on its own
    if name.startswith(folder.PREFIX):
        return _folder_builder(os.path.abspath(os.path.expanduser(name[len(folder.PREFIX):])))
    builder = _tfds_builder(name, data_dir)
    if builder.name in _LOCAL_BUILDERS and not _is_prepared(builder):
        builder = _download_and_prepare(name, data_dir, None, progress=False)
    return builder


def preparation_plan(name: str, data_dir: str | None) -> str:
    """What `prepare_dataset` is about to do, and where (one line).

    Args:
      name: a tfds name or "folder:PATH".
      data_dir: tfds data_dir (None: tfds' default).

    Returns:
      The line.
    """
    if name.startswith(folder.PREFIX):
        path = os.path.abspath(os.path.expanduser(name[len(folder.PREFIX):]))
        return (f"checking the image folder {path} (its layout and every image; nothing is "
                "written: training reads the images from there)...")
    where = data_dir or tfds.core.constants.DATA_DIR  # tfds' default
    if is_bundled(name):
        return f"preparing {name} in {where} (bundled: nothing is downloaded)..."
    return (f"preparing {name} in {where}: downloading into {where}/downloads, then writing "
            "the dataset there (a large dataset takes hours)...")


def preparation_summary(name: str, info: DatasetInfo, seconds: float) -> str:
    """One line: the prepared splits and their sizes.

    Args:
      name: the dataset's name.
      info: what `prepare_dataset` returned.
      seconds: how long it took.

    Returns:
      The line.
    """
    splits = ", ".join(f"{split} {n}" for split, n in info.num_examples.items())
    return (f"{name} is ready: {info.num_classes} classes; {splits} examples "
            f"({seconds:.0f} s)")


def _keys(builder: tfds.core.DatasetBuilder) -> tuple[str, str]:
    keys = builder.info.supervised_keys
    return tuple(keys) if keys and len(keys) == 2 else ("image", "label")


def _check_split_names(name: str, builder: tfds.core.DatasetBuilder, split: str) -> None:
    """Each split named in `split` ("train[:90%]+validation") exists (when tfds knows)."""
    known = list(builder.info.splits)
    if not known:  # not prepared (open_split says so) or tfds.testing.mock_data
        return
    for part in split.split("+"):
        base = part.strip().split("[")[0]
        if base not in known:
            raise DatasetError(f"Dataset {name!r} has no split {base!r} (from {split!r}); "
                               f"its splits are {', '.join(known)}.")


def open_split(dataset: str, data_dir: str | None, split: str) -> Split:
    """The records of `split`, in a fixed order, images still encoded.

    Args:
      dataset: a tfds name or "folder:PATH".
      data_dir: the tfds data_dir; None for tfds' default (unused for folders).
      split: a tfds split, e.g. "train", "validation", "train[:90%]".

    Returns:
      The opened Split.

    Raises:
      DatasetNotFoundError: the dataset is unknown or not prepared.
      DatasetError: the split does not exist, is empty, or the folder is malformed.
    """
    builder = _builder(dataset, data_dir)
    _check_split_names(dataset, builder, split)
    image_key, label_key = _keys(builder)
    read_config = tfds.ReadConfig(try_autocache=False, skip_prefetch=True)
    read_config.options.deterministic = True
    try:
        ds = builder.as_dataset(
            split=split,
            shuffle_files=False,
            decoders={image_key: tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
    except AssertionError as err:  # tfds' way of saying "no files here"
        if _is_prepared(builder):
            raise
        root = os.fspath(builder.data_dir_root)
        raise DatasetNotFoundError(_missing_message(builder.name, root)) from err
    n = int(ds.cardinality())
    if n < 0:  # unknown / infinite: the position bookkeeping needs the true size
        n = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
    if n == 0:
        raise DatasetError(f"Split {split!r} of {dataset!r} is empty.")
    records = ds.map(graph_fn(lambda ex: {"image": ex[image_key], "label": ex[label_key]}))
    return Split(records=records, num_examples=n, image_feature=builder.info.features[image_key])


def get_dataset_info(dataset: str, data_dir: str | None) -> DatasetInfo:
    """Facts about `dataset`; prepares the bundled digits dataset if needed.

    Args:
      dataset: a tfds name ("digits", "cifar10", "imagenet2012", ...) or "folder:PATH".
      data_dir: the tfds data_dir; None for tfds' default (unused for folders).

    Returns:
      The dataset's DatasetInfo (for a folder: class names = its class folders, sorted).

    Raises:
      DatasetNotFoundError: the dataset is unknown or not prepared in data_dir.
      DatasetError: a folder dataset is malformed.
    """
    builder = _builder(dataset, data_dir)
    image_key, label_key = _keys(builder)
    label = builder.info.features[label_key]
    num_examples = {name: split.num_examples for name, split in builder.info.splits.items()}
    if not num_examples:  # no metadata: not prepared (raises) or tfds.testing.mock_data
        num_examples = {s: split_num_examples(dataset, data_dir, s)
                        for s in ("train", "validation", "test")}
    names = list(label.names) if isinstance(label, tfds.features.ClassLabel) else None
    return DatasetInfo(
        num_classes=int(label.num_classes),
        num_examples=num_examples,
        class_names=names,
        image_channels=int(builder.info.features[image_key].shape[-1]),
        summary=builder.summary if isinstance(builder, folder.ImageFolder) else "",
    )


def split_num_examples(dataset: str, data_dir: str | None, split: str) -> int:
    """Examples in `split` of `dataset`, which may be a slice such as "train[:90%]"."""
    return open_split(dataset, data_dir, split).num_examples
