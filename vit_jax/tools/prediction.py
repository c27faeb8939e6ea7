"""Classify image files (the library of `python -m vit_jax.predict`).

Images of any size up to 89.5 megapixels (a larger one is refused as a possible
decompression bomb, `vit_jax.data.image_check.decode`) and any mode (PNG, JPEG, ...;
grayscale, RGB or RGBA) are decoded in full, then go through the eval transform of the
input pipeline: short side resized to image_size / eval_resize_ratio, centre crop, pixels
scaled to [-1, 1]. The ratio is the workdir config's `eval_resize_ratio` (0.875 for a
`.npz`, as for the released models). Class names come from the dataset's tfds metadata
(the workdir's dataset, or `dataset` for a `.npz`); without it the class indices are
used. `load_image`, `preprocess` and `top_k_from_logits` are shared with the attention
maps, the analysis and few-shot tools.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vit_core.errors import ConfigError
from vit_jax.data import image_check, input_pipeline
from vit_jax.weights import loading

DEFAULT_TOP_K = 5


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


def eval_resize_ratio(loaded: loading.LoadedModel) -> float:
    """The eval resize ratio: the training config's, else the pipeline default (0.875)."""
    config = loaded.config
    if config is not None and config.get("eval_resize_ratio") is not None:
        return float(config.eval_resize_ratio)
    return input_pipeline.DEFAULT_EVAL_RESIZE_RATIO


def preprocess(loaded: loading.LoadedModel, images: Sequence[np.ndarray]) -> np.ndarray:
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


def class_label(loaded: loading.LoadedModel, index: int) -> str:
    """The name of class `index`, or the index itself when the names are unknown."""
    names = loaded.class_names
    return names[index] if names else str(index)


def top_k_from_logits(loaded: loading.LoadedModel, logits: np.ndarray,
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


def predict(checkpoint: str | loading.LoadedModel, paths: Sequence[str],
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
    if not isinstance(loaded, loading.LoadedModel):
        loaded = loading.load_model(checkpoint, dataset=dataset, data_dir=data_dir)
    if not images:
        return []
    logits = loading.predict_logits(loaded, preprocess(loaded, images))  # (N, C)
    return top_k_from_logits(loaded, logits, top_k)


def format_prediction(path: str, top: list[tuple[str, float]]) -> str:
    """One output line: `path: name (p) | name (p) | ...`."""
    return f"{path}: " + " | ".join(f"{name} ({p:.4f})" for name, p in top)
