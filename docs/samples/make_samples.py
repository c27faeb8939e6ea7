"""Writes the sample image of the README's quick start: `python docs/samples/make_samples.py`.

docs/samples/digit_3.png is the first 3 of the digits dataset's held-out test split
(vit_jax/data/digits.py), exactly as the dataset stores it: 8×8 grayscale uint8. The
quick-start model never trains on it, and predict/visualize resize it as evaluation does.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = {"digit_3.png": 3}  # file name -> label of the test digit it holds


def sample_digit(label: int) -> np.ndarray:
    """The first test-split digit of class `label`: uint8 (8, 8) in 0..255."""
    from vit_jax.data import digits

    images, labels = digits.load_source()  # (N, 8, 8, 1), (N,)
    test = digits.split_indices(labels)["test"]
    first = test[labels[test] == label][0]
    return images[first, ..., 0]


def main() -> None:
    from PIL import Image

    for name, label in SAMPLES.items():
        path = os.path.join(HERE, name)
        Image.fromarray(sample_digit(label)).save(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
