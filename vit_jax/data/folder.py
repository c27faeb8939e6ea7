"""A folder of your own images as a dataset: `config.dataset = "folder:PATH"`.

Layout (tfds' `ImageFolder` convention; class names are the folder names, sorted):

  PATH/train/CLASS/*.jpg|*.jpeg|*.png   required, at least 2 classes
  PATH/val/CLASS/...                    optional: the "validation" split
  PATH/test/CLASS/...                   optional: the "test" split

tfds' `tfds.folder_dataset.ImageFolder` does the scanning, the labels, the features and
the file reading. This module wraps it for what it lacks:
  * checks with one clear `DatasetError` line each (no train/ folder, one class, class
    folders that differ between splits, an empty class, a file that is not an image);
    tfds would take any top-level folder as a split and any subfolder as a class, and
    fail on a bad file only when the pipeline decodes it, mid-training;
  * a held-out "validation" split when there is no val/: HELD_OUT_FRACTION of every class
    of train/ (at least 1 image each), chosen with a fixed seed from the sorted file
    names, so it does not depend on file-system order nor on the training seed;
  * split slices ("train[:90%]"), which ImageFolder refuses ("Subsplit API not yet
    supported"), so the configs' split strings work as with any tfds dataset.

Files that are not readable JPEG/PNG images stop the run with an error naming them,
rather than being skipped: a skipped file silently changes the data and the class balance,
and a folder is quick to fix once. `vit_jax.data.image_check` decodes every file (in
parallel, verdicts cached) and says what is accepted, converted or refused.
"""

from __future__ import annotations

import os
import random
from typing import Any

import tensorflow_datasets as tfds

from vit_core.errors import DatasetError
from vit_jax.data import image_check

PREFIX = "folder:"  # config.dataset = PREFIX + PATH
HELD_OUT_FRACTION = 0.1  # of each class of train/, when there is no val/
_HELD_OUT_SEED = 0  # changing it changes the validation split of every folder dataset
_SPLIT_FOLDERS = {"train": "train", "val": "validation", "test": "test"}  # folder → split


class ImageFolder(tfds.folder_dataset.ImageFolder, skip_registration=True):
    """tfds' ImageFolder, checked, with a held-out validation split and split slices.

    Splits: "train", "validation" (PATH/val/, or held out from train/) and "test" (PATH/test/,
    if present). Images decode to 3 channels (grayscale repeated, alpha dropped).
    """

    name = "image_folder"

    def __init__(self, root_dir: str):
        """Scans and checks `root_dir`; `summary` is one line with the split sizes.

        Args:
          root_dir: PATH, the folder that holds train/ (and optionally val/, test/).

        Raises:
          DatasetError: the folder is missing or malformed (the message says how).
        """
        root_dir = os.path.abspath(os.path.expanduser(root_dir))
        _check_layout(root_dir)
        # shape=(None, None, 3): decode every image to RGB, whatever its mode.
        super().__init__(root_dir, shape=(None, None, 3))
        # `_split_examples` is tfds' scan result (split folder → [(image_path, label)],
        # deterministically shuffled); tests/test_folder_dataset.py breaks if it changes.
        examples = {_SPLIT_FOLDERS[k]: v for k, v in self._split_examples.items()}
        _check_classes(root_dir, examples)
        image_check.check_folder(root_dir, [  # every class folder of every split
            os.path.join(root_dir, split, name) for split in _SPLIT_FOLDERS
            if os.path.isdir(os.path.join(root_dir, split))
            for name in _folders(os.path.join(root_dir, split))])
        held_out = "validation" not in examples
        if held_out:
            examples["train"], examples["validation"] = _hold_out(root_dir, examples["train"])
        order = list(_SPLIT_FOLDERS.values())  # train, validation, test
        self._split_examples = examples = dict(sorted(examples.items(),
                                                      key=lambda kv: order.index(kv[0])))
        self.info.set_splits(tfds.core.SplitDict([
            tfds.core.SplitInfo(name=name, shard_lengths=[len(ex)], num_bytes=0)
            for name, ex in examples.items()
        ]))
        classes = self.info.features["label"].names
        counts = ", ".join(f"{name} {len(ex)}" for name, ex in examples.items())
        how = (f" (held out from train/: {HELD_OUT_FRACTION:.0%} of each class, at least 1, "
               f"seed {_HELD_OUT_SEED}; add {root_dir}/val/ to choose it yourself)"
               if held_out else "")
        # Printed by the tools that act on it (train, prepare), not by every load of a
        # folder-trained model (predict, evaluate, visualize read only the class names).
        self.summary = f"folder dataset {root_dir}: {len(classes)} classes; {counts} images{how}"

    def _as_dataset(self, split: Any, shuffle_files: bool = False,
                    decoders: Any = None, read_config: Any = None) -> Any:
        """The records of `split` (slices and sums allowed, e.g. "train[:90%]+validation")."""
        import tensorflow as tf  # deferred (~6 s): the pipeline imports it when it reads data

        parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(self.info.splits)
        examples = [ex for p in parts for ex in self._split_examples[p.splitname][p.from_:p.to]]
        label = self.info.features["label"]
        paths = [ex.image_path for ex in examples]
        labels = [label.str2int(ex.label) for ex in examples]
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        if shuffle_files:
            ds = ds.shuffle(len(examples))

        def load(path: Any, label: Any) -> dict[str, Any]:  # as ImageFolder's, + decoders
            example = {"image": tf.io.read_file(path), "label": tf.cast(label, tf.int64),
                       "image/filename": path}
            return self.info.features.decode_example(example, decoders=decoders)

        # Traced as written, without AutoGraph (see vit_jax.data.dataset_info.graph_fn).
        load = tf.autograph.experimental.do_not_convert(load)
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def _folders(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _check_layout(root: str) -> None:
    """PATH exists and holds train/ plus only val/ and test/ (tfds takes any folder as a split)."""
    if not os.path.isdir(root):
        raise DatasetError(f"Image folder {root} does not exist (dataset 'folder:{root}').")
    splits = _folders(root)
    if "train" not in splits:
        found = f"it holds {', '.join(splits)}" if splits else "it has no subfolders"
        raise DatasetError(
            f"Image folder {root} has no train/ folder ({found}); expected "
            f"{root}/train/CLASS/IMAGE.jpg, with optional {root}/val/ and {root}/test/.")
    other = [s for s in splits if s not in _SPLIT_FOLDERS]
    if other:
        raise DatasetError(
            f"Image folder {root} holds folders other than train/, val/ and test/: "
            f"{', '.join(other)}; move them out (class folders go in train/).")


def _classes_with_images(examples: list[Any]) -> set[str]:
    return {ex.label for ex in examples}


def _check_classes(root: str, examples: dict[str, list[Any]]) -> None:
    """At least 2 classes in train/, each with images; val/ and test/ have the same classes."""
    train = _folders(os.path.join(root, "train"))
    if not examples.get("train"):
        raise DatasetError(f"Image folder {root}/train has no .jpg/.jpeg/.png images in class "
                           f"folders (expected {root}/train/CLASS/IMAGE.jpg).")
    if len(train) < 2:
        raise DatasetError(f"Image folder {root}/train has a single class ({train[0]}); a "
                           "classifier needs at least 2 class folders.")
    empty = sorted(set(train) - _classes_with_images(examples["train"]))
    if empty:
        raise DatasetError(f"Class folders without .jpg/.jpeg/.png images in {root}/train: "
                           f"{', '.join(empty)}; add images or remove the folders.")
    for folder, split in _SPLIT_FOLDERS.items():
        if split == "train" or not os.path.isdir(os.path.join(root, folder)):
            continue
        classes = _folders(os.path.join(root, folder))
        extra, missing = sorted(set(classes) - set(train)), sorted(set(train) - set(classes))
        if extra or missing:
            diff = "; ".join(
                f"{what}: {', '.join(names)}" for what, names in
                [(f"only in {folder}/", extra), (f"missing from {folder}/", missing)] if names)
            raise DatasetError(f"Class folders of {root}/{folder} differ from those of "
                               f"{root}/train ({diff}); both need the same class folders.")


def _hold_out(root: str, train: list[Any]) -> tuple[list[Any], list[Any]]:
    """Splits train/ into (train, validation): HELD_OUT_FRACTION of each class, at least 1.

    The choice depends only on the file names and _HELD_OUT_SEED (not on file-system order);
    both parts keep tfds' deterministic order of `train`.
    """
    by_class: dict[str, list[str]] = {}
    for ex in train:
        by_class.setdefault(ex.label, []).append(ex.image_path)
    chosen = set()
    for name, paths in sorted(by_class.items()):
        if len(paths) < 2:
            raise DatasetError(
                f"Class {name} has 1 image in {root}/train: at least 2 are needed to hold one "
                f"out for validation (or add {root}/val/ with the same class folders).")
        count = max(1, round(HELD_OUT_FRACTION * len(paths)))
        chosen.update(random.Random(f"{_HELD_OUT_SEED}/{name}").sample(sorted(paths), count))
    return ([ex for ex in train if ex.image_path not in chosen],
            [ex for ex in train if ex.image_path in chosen])
