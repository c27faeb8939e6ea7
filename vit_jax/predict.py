"""Classify image files: `python -m vit_jax.predict --checkpoint CKPT IMAGE [IMAGE ...]`.

CKPT is a training workdir, an official-layout `.npz` or a Hugging Face / timm model
directory (see `vit_jax.evaluate`); `--model NAME` instead takes a released model by name
(`vit_jax.pretrained`, downloaded into the cache on first use).
Images of any size up to 89.5 megapixels (a larger one is refused as a possible
decompression bomb, `vit_jax.datasets.image_check.decode`) and any mode (PNG, JPEG, ...;
grayscale, RGB or RGBA) are decoded in full, then go through the eval transform of the
input pipeline: short side resized to image_size / eval_resize_ratio,
centre crop, pixels scaled to [-1, 1]. The ratio is the workdir config's
`eval_resize_ratio` (0.875 for a `.npz`, as for the released models). For each image
one line is printed:

  digit.png: 7 (0.9812) | 1 (0.0090) | 9 (0.0041) | 4 (0.0022) | 2 (0.0014)

Class names come from the dataset's tfds metadata (the workdir's dataset, or --dataset
for a `.npz`); without it the class indices are printed. `load_checkpoint`,
`load_image` and `preprocess` are shared with `vit_jax.visualize`.
"""

from __future__ import annotations

import argparse
import os
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from vit_core.errors import CheckpointError, ConfigError, run_cli
from vit_jax import evaluate, input_pipeline, pretrained
from vit_jax.cli import quiet_logs
from vit_jax.datasets import image_check

DEFAULT_TOP_K = 5


def load_checkpoint(path: str, dataset: str | None = None,
                    data_dir: str | None = None) -> evaluate.LoadedModel:
    """`evaluate.load_model`, with every unusable-file failure as a one-line error.

    Args:
      path: a training workdir or an official-layout `.npz` file.
      dataset: tfds name whose class names label the outputs (workdirs know their own).
      data_dir: tfds data_dir for the class-name metadata.

    Returns:
      The loaded model.

    Raises:
      CheckpointError: nothing usable at `path` (the message says why).
    """
    if os.path.isfile(path) and not path.endswith(".npz"):
        raise CheckpointError(
            f"{path} is not a checkpoint: expected a training workdir or a .npz.")
    try:
        return evaluate.load_model(path, dataset=dataset, data_dir=data_dir)
    except (OSError, zipfile.BadZipFile, KeyError) as e:  # corrupt file, unreadable workdir
        raise CheckpointError(f"Cannot load the checkpoint {path}: {e}") from None


def load_image(path: str) -> np.ndarray:
    """Reads an image file as uint8 (H, W) grayscale, (H, W, 3) RGB or (H, W, 4) RGBA.

    Args:
      path: any format Pillow reads (PNG, JPEG, BMP, GIF's first frame, ...).

    Returns:
      The pixels, uint8; palette, 16-bit and CMYK images are converted to RGB or L.

    Raises:
      ImageError: no such file, not a readable image, broken (e.g. truncated), or larger
        than `image_check.MAX_PIXELS` (a decompression bomb).
    """
    image = image_check.decode(path)  # untrusted: decoded in full, size bounded
    if image.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit / float grayscale
        pixels = np.asarray(image, np.float64)
        span = max(pixels.max() - pixels.min(), 1e-12)
        return np.round(255 * (pixels - pixels.min()) / span).astype(np.uint8)
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return np.asarray(image, np.uint8)


def eval_resize_ratio(loaded: evaluate.LoadedModel) -> float:
    """The eval resize ratio: the training config's, else the pipeline default (0.875)."""
    config = loaded.config
    if config is not None and config.get("eval_resize_ratio") is not None:
        return float(config.eval_resize_ratio)
    return input_pipeline.DEFAULT_EVAL_RESIZE_RATIO


def preprocess(loaded: evaluate.LoadedModel, images: Sequence[np.ndarray]) -> np.ndarray:
    """The pipeline's eval transform on raw uint8 images of any size.

    Args:
      loaded: the model (its image size and training config's resize ratio are used).
      images: uint8 (H, W[, C]) arrays, C in 1, 3, 4.

    Returns:
      float32 (N, S, S, 3) in [-1, 1].
    """
    ratio = eval_resize_ratio(loaded)
    return np.stack([input_pipeline.preprocess_for_eval(im, loaded.image_size, ratio)
                     for im in images])  # (N, S, S, 3)


def class_label(loaded: evaluate.LoadedModel, index: int) -> str:
    """The name of class `index`, or the index itself when the names are unknown."""
    names = loaded.class_names
    return names[index] if names else str(index)


def top_k_from_logits(loaded: evaluate.LoadedModel, logits: np.ndarray,
                      top_k: int) -> list[list[tuple[str, float]]]:
    """Softmax probabilities of the `top_k` most likely classes of each row.

    Args:
      loaded: the model, for the class names.
      logits: (N, num_classes).
      top_k: classes per image (at most num_classes are returned).

    Returns:
      Per image, [(class name, probability)] by decreasing probability.
    """
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)  # (N, C)
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]  # (N, k)
    return [[(class_label(loaded, int(c)), float(p[c])) for c in row]
            for p, row in zip(probs, order, strict=True)]


def predict(checkpoint: str | evaluate.LoadedModel, paths: Sequence[str],
            top_k: int = DEFAULT_TOP_K, *, dataset: str | None = None,
            data_dir: str | None = None) -> list[list[tuple[str, float]]]:
    """Classifies image files.

    Args:
      checkpoint: a workdir, a `.npz` path, or an already loaded model.
      paths: image files.
      top_k: classes to return per image.
      dataset: tfds name for class names of a `.npz` (workdirs know their own).
      data_dir: tfds data_dir for that metadata.

    Returns:
      One list per image of (class name, probability), most likely first.

    Raises:
      CheckpointError / ImageError / ConfigError: a missing or unusable checkpoint or
        image, or a bad `top_k`.
    """
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}.")
    images = [load_image(p) for p in paths]  # fail on a bad image before loading a model
    loaded = checkpoint
    if not isinstance(loaded, evaluate.LoadedModel):
        loaded = load_checkpoint(checkpoint, dataset=dataset, data_dir=data_dir)
    if not images:
        return []
    logits = evaluate.predict_logits(loaded, preprocess(loaded, images))  # (N, C)
    return top_k_from_logits(loaded, logits, top_k)


def format_prediction(path: str, top: list[tuple[str, float]]) -> str:
    """One output line: `path: name (p) | name (p) | ...`."""
    return f"{path}: " + " | ".join(f"{name} ({p:.4f})" for name, p in top)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of `python -m vit_jax.predict`."""
    parser = argparse.ArgumentParser(
        prog="python -m vit_jax.predict",
        description="Print the top-k classes and their softmax probabilities for each image, "
                    "one line per image. Images of any size are resized and centre-cropped "
                    "as in evaluation.",
        epilog="example: python -m vit_jax.predict --checkpoint runs/digits digit.png")
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (PNG, JPEG, ...; grayscale, RGB or RGBA)")
    add_checkpoint_args(parser)
    parser.add_argument("--top_k", type=int, default=DEFAULT_TOP_K,
                        help="classes to print per image (default: %(default)s)")
    return parser.parse_args(argv)


def add_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """--checkpoint or --model, --dataset and --data_dir, shared by predict and visualize."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint",
                       help="a training workdir (python -m vit_jax.train --workdir ...) or an "
                            "official-layout .npz file")
    which.add_argument("--model", metavar="NAME",
                       help="a released model by name (vit_jax/pretrained.py, e.g. "
                            "vit_base_patch16_224.augreg_in21k_ft_in1k, or hf-hub:ORG/REPO), "
                            "downloaded into $VIT_JAX_CACHE on first use")
    parser.add_argument("--dataset", default=None,
                        help="tfds dataset whose class names label a .npz model's outputs "
                             "(a workdir knows its own); default: class indices")
    parser.add_argument("--data_dir", default=None,
                        help="tfds data_dir holding that dataset's metadata")


def checkpoint_arg(args: argparse.Namespace) -> str:
    """The checkpoint path `add_checkpoint_args` asked for: --checkpoint, or --model's file.

    Args:
      args: parsed arguments with `checkpoint` and `model`.

    Returns:
      A workdir or `.npz` path (a released name is downloaded on first use).

    Raises:
      CheckpointError: an unknown name, or its file cannot be had (one line).
    """
    if args.checkpoint is not None:
        return args.checkpoint
    return pretrained.resolve(args.model)[0]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; user errors end in one 'error:' line and exit code 2."""
    args = parse_args(argv)
    quiet_logs()

    def run() -> Any:
        results = predict(checkpoint_arg(args), args.images, args.top_k, dataset=args.dataset,
                          data_dir=args.data_dir)
        for path, top in zip(args.images, results, strict=True):
            print(format_prediction(path, top), flush=True)

    run_cli(run)


if __name__ == "__main__":
    main()
