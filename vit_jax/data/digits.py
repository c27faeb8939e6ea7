"""The "digits" tfds dataset: scikit-learn's bundled handwritten digits (UCI optdigits).

1,797 real 8×8 grayscale images of the digits 0–9, shipped inside scikit-learn, so it
builds with no network: the default dataset of every quick run and test. The source
values are 0..16 (counts of set pixels in 4×4 blocks of 32×32 bitmaps); they are stored
as uint8 0..255 (round(v * 255 / 16)) so the data looks like any other tfds image.

Splits are fixed and stratified by class (scikit-learn `train_test_split`, seed 0):
  test        20% of all examples: held out, never used for model selection;
  validation  10% of the rest: for model selection;
  train       the remaining examples.

Usage: importing this module registers the builder with tfds under the name "digits";
`vit_jax.data.dataset_info` (used by the input pipeline) prepares it into the data_dir on first
use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
_SOURCE_MAX = 16  # the largest value in sklearn's digits (a 4×4 block fully set)
_TEST_FRACTION = 0.2  # of all examples
_VALIDATION_FRACTION = 0.1  # of what the test split leaves
_SPLIT_SEED = 0  # changing it changes the splits: bump the version if you do

_CITATION = """\
@misc{optdigits,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {Optical Recognition of Handwritten Digits},
  year = {1998},
  howpublished = {UCI Machine Learning Repository, doi:10.24432/C50P49},
}"""


def load_source() -> tuple[np.ndarray, np.ndarray]:
    """Loads the digits from scikit-learn, as stored by this dataset.

    Returns:
      images: uint8 (1797, 8, 8, 1) in 0..255; labels: int64 (1797,) in 0..9.
    """
    from sklearn.datasets import load_digits  # deferred: sklearn costs ~1 s to import

    source = load_digits()
    values = np.round(source.images * (255.0 / _SOURCE_MAX))  # (N, 8, 8) float64
    images = np.clip(values, 0, 255).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    return images, source.target.astype(np.int64)


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed, stratified split of the examples.

    Args:
      labels: (N,) class of every example, in source order.

    Returns:
      {"train", "validation", "test"} → sorted indices into the source arrays; the
      three sets are disjoint and cover all N examples.
    """
    from sklearn.model_selection import train_test_split

    every = np.arange(len(labels))
    rest, test = train_test_split(
        every, test_size=_TEST_FRACTION, stratify=labels, random_state=_SPLIT_SEED
    )
    train, validation = train_test_split(
        rest, test_size=_VALIDATION_FRACTION, stratify=labels[rest], random_state=_SPLIT_SEED
    )
    return {"train": np.sort(train), "validation": np.sort(validation), "test": np.sort(test)}


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8×8 handwritten digits as a tfds dataset (registered as "digits")."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "First release: stratified train/validation/test splits."
    }

    def _info(self) -> tfds.core.DatasetInfo:
        # Built directly: `dataset_info_from_configs` expects the builder to live in a
        # package with metadata files, which this plain module does not have.
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=IMAGE_SHAPE),
                    "label": tfds.features.ClassLabel(names=[str(i) for i in range(NUM_CLASSES)]),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # nothing to download: the data ships with scikit-learn
        images, labels = load_source()
        return {
            name: self._generate_examples(images, labels, indices)
            for name, indices in split_indices(labels).items()
        }

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        # The key is the index in scikit-learn's order: unique and stable across builds.
        for i in indices:
            yield int(i), {"image": images[i], "label": int(labels[i])}
