"""Attention maps (the library of `python -m vit_jax.visualize`).

For each image the PNG has one row: the input (as the model sees it, after the eval
transform, titled with the top-1 class), then per head of the last block where the class
token looks (for a "gap" model, which has no class token: the attention each patch
receives, averaged over all query tokens), then the attention rollout over all blocks
(Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", arXiv 2005.00928):
per block average the heads, add the identity for the residual connection, renormalise
the rows, and multiply the blocks' matrices from the first to the last. Maps are
distributions over the patches, upsampled bilinearly over the image and drawn with a
colour scale from 0 to each map's maximum.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from vit_core.errors import ConfigError
from vit_jax.tools import prediction
from vit_jax.weights import loading

DEFAULT_PANEL_PX = 160  # side of one square panel in the PNG
_DPI = 100
_TITLE_PX = 22  # room above each row for the panel titles


def attention_rollout(attentions: Sequence[np.ndarray]) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) through a stack of blocks.

    Args:
      attentions: per block, (K, N, N) softmax weights, first block first.

    Returns:
      (N, N) row-stochastic matrix: row q is how much token q of the output draws on each
      input token, counting the residual path as half of each block.
    """
    n = attentions[0].shape[-1]
    eye = np.eye(n)
    rollout = eye
    for weights in attentions:
        a = np.asarray(weights, np.float64).mean(axis=0) + eye  # (N, N): heads + residual
        a /= a.sum(axis=-1, keepdims=True)
        rollout = a @ rollout  # (N, N)
    return rollout


@functools.partial(jax.jit, static_argnums=0)  # compiled once per model, not per image
def _apply_with_attention(model: Any, params: Any, images: jax.Array) -> tuple[Any, Any]:
    return model.apply({"params": params}, images, return_features=True,
                       return_attention=True)


def attention_maps(loaded: loading.LoadedModel, image: np.ndarray) -> dict[str, Any]:
    """Last-block attention per head and the rollout of one preprocessed image.

    Args:
      loaded: the model.
      image: float32 (S, S, 3) in [-1, 1], e.g. from `prediction.preprocess`.

    Returns:
      "heads": (K, gh, gw) last-block attention of the class token ("gap" models: mean
        over query tokens) to the gh×gw patches, each head renormalised to sum to 1;
      "rollout": (gh, gw) attention rollout over all blocks, summing to 1;
      "logits": (num_classes,) the model's output.
    """
    model = loaded.model
    size = loaded.image_size
    image = np.asarray(image, np.float32)
    if image.shape != (size, size, 3):
        raise ValueError(f"Expected a preprocessed ({size}, {size}, 3) image, got {image.shape}.")
    logits, features = _apply_with_attention(model, loaded.params, jnp.asarray(image[None]))
    attn = [np.asarray(features[f"attention_{i}"][0], np.float64)
            for i in range(model.num_layers)]  # L × (K, N, N)
    prefix = 1 if model.classifier == "token" else 0  # the class token comes first
    grid = size // model.spec.total_stride  # image pixels per token (ResNet × patch)
    last = attn[-1]
    heads = last[:, 0, prefix:] if prefix else last.mean(axis=1)  # (K, gh*gw)
    heads = heads / heads.sum(axis=-1, keepdims=True)
    flow = attention_rollout(attn)
    rollout = flow[0, prefix:] if prefix else flow.mean(axis=0)  # (gh*gw,)
    rollout = rollout / rollout.sum()
    return {"heads": heads.reshape(-1, grid, grid), "rollout": rollout.reshape(grid, grid),
            "logits": np.asarray(logits[0], np.float64)}


def upsample(attention: np.ndarray, size: int) -> np.ndarray:
    """A (gh, gw) patch map resized bilinearly to (size, size) pixels."""
    return np.asarray(jax.image.resize(jnp.asarray(attention), (size, size), "bilinear"))


def figure_size(num_images: int, num_heads: int, panel_px: int = DEFAULT_PANEL_PX
                ) -> tuple[int, int]:
    """(width, height) in pixels of the PNG that `render` writes."""
    return (num_heads + 2) * panel_px, num_images * (panel_px + _TITLE_PX)


def render(rows: Sequence[tuple[np.ndarray, dict[str, Any], str]], out: str,
           panel_px: int = DEFAULT_PANEL_PX) -> None:
    """Draws rows of [input | head 1 … head K | rollout] into a PNG.

    Args:
      rows: per image, (preprocessed (S, S, 3) image in [-1, 1], `attention_maps` output,
        the input panel's title).
      out: the PNG path.
      panel_px: side of each square panel in pixels (see `figure_size`).
    """
    num_heads = rows[0][1]["heads"].shape[0]
    width, height = figure_size(len(rows), num_heads, panel_px)
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    cols = num_heads + 2
    row_h = 1.0 / len(rows)
    title_frac = _TITLE_PX / height
    for r, (image, maps, title) in enumerate(rows):
        size = image.shape[0]
        pixels = (np.asarray(image) + 1.0) / 2.0  # [-1, 1] → [0, 1]
        panels = [(None, title)]
        panels += [(maps["heads"][k], f"head {k + 1}") for k in range(num_heads)]
        panels += [(maps["rollout"], "rollout")]
        bottom = 1.0 - (r + 1) * row_h
        for c, (attention, label) in enumerate(panels):
            gap = 2.0 / width  # a 1-pixel margin on either side of each panel
            ax = fig.add_axes((c / cols + gap / 2, bottom, 1.0 / cols - gap,
                               row_h - title_frac))
            ax.imshow(pixels, interpolation="nearest")
            if attention is not None:
                heat = upsample(attention, size)
                ax.imshow(heat, cmap="inferno", alpha=0.65, vmin=0.0, vmax=heat.max(),
                          interpolation="bilinear")
            ax.set_title(label, fontsize=9, pad=3)
            ax.set_axis_off()
    fig.savefig(out, dpi=_DPI)


def visualize(checkpoint: str | loading.LoadedModel, paths: Sequence[str], out: str,
              panel_px: int = DEFAULT_PANEL_PX, *, dataset: str | None = None,
              data_dir: str | None = None) -> dict[str, Any]:
    """Writes the attention figure of image files (one row per image).

    Args:
      checkpoint: a workdir, a `.npz` path, or an already loaded model.
      paths: image files.
      out: the PNG to write.
      panel_px: side of each panel in pixels.
      dataset: tfds name for class names of a `.npz` (workdirs know their own).
      data_dir: tfds data_dir for that metadata.

    Returns:
      The `attention_maps` of the last image.

    Raises:
      CheckpointError / ImageError / ConfigError: a missing or unusable checkpoint or
        image, a bad panel size or output folder.
    """
    if panel_px < 16:
        raise ConfigError(f"The panel size must be at least 16 pixels, got {panel_px}.")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ConfigError(f"Cannot write {out}: no folder {folder}.")
    raw = [prediction.load_image(p) for p in paths]  # fail on a bad image before loading
    loaded = checkpoint
    if not isinstance(loaded, loading.LoadedModel):
        loaded = loading.load_model(checkpoint, dataset=dataset, data_dir=data_dir)
    rows = []
    maps: dict[str, Any] = {}
    for image in prediction.preprocess(loaded, raw):
        maps = attention_maps(loaded, image)
        [(name, p)] = prediction.top_k_from_logits(loaded, maps["logits"][None], 1)[0]
        rows.append((image, maps, f"predicted {name} ({p:.2f})"))
    render(rows, out, panel_px)
    return maps
