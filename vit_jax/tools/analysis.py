"""The paper's analysis figures (the library of `python -m vit_jax.analyze`).

Figure 7 of Dosovitskiy et al. 2020 (arXiv 2010.11929) and its attention maps, from any
workdir or official `.npz`, as PNGs in DIR:

* `patch_embedding_pca.png` (Fig. 7 left): the first 28 principal components of the
  patch-embedding filters. Each of the D filters is a P×P×3 image (a column of the
  (P·P·3, D) embedding matrix); the components are the leading right singular vectors of
  the centred filter matrix, each drawn min-max scaled (their sign is arbitrary).
* `posemb_similarity.png` (Fig. 7 centre): tile (i, j) shows the cosine similarity of the
  position embedding of patch (i, j) to that of every patch. Only patch tokens have a
  position (a class token's row is dropped); a "sincos2d" model's fixed table is computed.
* `attention_distance.png` (Fig. 7 right): each head's mean attention distance against
  the block's depth: for every query patch, the distance in pixels between its centre and
  each key patch's centre, weighted by the attention weight, averaged over the query
  patches and the images. The class token has no position: it is dropped as a query, and
  the remaining weights of each patch query are renormalised over the patch keys.
* `attention_maps.png` (Fig. 6): per image the last block's attention per head and the
  attention rollout over all blocks (`vit_jax.tools.attention_maps`).

The attention weights come from `return_attention=True`, which computes softmax(q·kᵀ/√Dh)
explicitly from q and k whatever `attention_impl` the model uses, so a checkpoint trained
with a fused kernel ("cudnn", "xla") gives the same figures. The numbers behind the figures
are written to `analysis.json`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from vit_core.errors import ConfigError
from vit_core.posemb import sincos_2d
from vit_jax.data import input_pipeline
from vit_jax.tools import attention_maps, prediction
from vit_jax.weights import loading

NUM_COMPONENTS = 28  # the paper's Fig. 7 shows 28
DEFAULT_NUM_IMAGES = 32  # images averaged for the attention distance (--dataset)
DEFAULT_NUM_MAPS = 4  # images drawn in attention_maps.png (--dataset)
_DPI = 100
_PROGRESS_EVERY_S = 2.0


# ------------------------------------------------------------------ the maths (numpy)
def patch_embedding_components(kernel: np.ndarray, num: int = NUM_COMPONENTS
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the patch-embedding filters.

    Args:
      kernel: (P, P, C, D) the `embedding` kernel: D filters of P×P×C pixels.
      num: components to return (at most min(D, P·P·C)).

    Returns:
      (n, P, P, C) unit-norm components, strongest first, and (n,) the fraction of the
      filters' variance each explains.
    """
    p1, p2, c, d = kernel.shape
    filters = np.asarray(kernel, np.float64).reshape(p1 * p2 * c, d).T  # (D, P·P·C)
    centred = filters - filters.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (r, P·P·C)
    n = min(num, vt.shape[0])
    variance = s ** 2
    explained = variance[:n] / max(variance.sum(), 1e-30)
    return vt[:n].reshape(n, p1, p2, c), explained


def cosine_similarity(vectors: np.ndarray) -> np.ndarray:
    """(N, N) cosine similarity of the rows of (N, D) `vectors`."""
    v = np.asarray(vectors, np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-30)
    return v @ v.T  # (N, N)


def patch_centres(grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """(gh·gw, 2) pixel coordinates (row, column) of the patch centres, row-major."""
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    return (np.stack([rows.ravel(), cols.ravel()], axis=-1) + 0.5) * patch_size


def mean_attention_distance(weights: np.ndarray, grid: tuple[int, int], patch_size: int,
                            prefix: int = 0) -> np.ndarray:
    """Each head's mean attention distance in pixels (the paper's Fig. 7 right).

    Args:
      weights: (..., K, T, T) softmax attention of one block, T = prefix + gh·gw tokens;
        leading axes (images) are averaged over.
      grid: (gh, gw) the patch grid.
      patch_size: pixels per patch side.
      prefix: leading tokens without a position (1 for a class token).

    Returns:
      (K,) Σ_k w(q, k)·|c_q − c_k| over patch keys (weights renormalised over them),
      averaged over the patch queries q and the leading axes.
    """
    w = np.asarray(weights, np.float64)[..., prefix:, prefix:]  # (..., K, N, N)
    w = w / np.maximum(w.sum(axis=-1, keepdims=True), 1e-30)
    centres = patch_centres(grid, patch_size)  # (N, 2)
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)  # (N, N)
    per_query = (w * dist).sum(axis=-1)  # (..., K, N)
    heads, n = per_query.shape[-2:]
    return per_query.reshape(-1, heads, n).mean(axis=(0, 2))  # (K,)


# ------------------------------------------------------------------ the model's numbers
def prefix_tokens(loaded: loading.LoadedModel) -> int:
    """Tokens before the patches: the class token and the registers."""
    return loaded.model.spec.num_prefix_tokens


def patch_grid(loaded: loading.LoadedModel) -> tuple[int, int]:
    """(gh, gw) of the model's image size."""
    return loaded.model.spec.replace(image_size=loaded.image_size).grid


def position_embeddings(loaded: loading.LoadedModel) -> np.ndarray:
    """(gh·gw, D) the patches' position embeddings (learned, or the sincos2d table)."""
    grid = patch_grid(loaded)
    if loaded.model.spec.posemb == "sincos2d":
        return np.asarray(sincos_2d(*grid, loaded.model.spec.hidden_size)[0])
    table = np.asarray(loaded.params["Transformer"]["posembed_input"]["pos_embedding"])[0]
    return table[prefix_tokens(loaded):]  # (gh·gw, D)


@functools.partial(jax.jit, static_argnums=0)
def _attention(model: Any, params: Any, images: jax.Array) -> tuple[Any, Any]:
    logits, out = model.apply({"params": params}, images, return_features=True,
                              return_attention=True)
    return logits, [out[f"attention_{i}"] for i in range(model.num_layers)]


def attention_weights(loaded: loading.LoadedModel, images: np.ndarray
                      ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits and every block's attention weights of preprocessed images.

    Args:
      loaded: the model (any `attention_impl`: the weights are computed from q and k).
      images: float32 (B, S, S, 3) in [-1, 1].

    Returns:
      (B, num_classes) logits and, per block, (B, K, T, T) float32 weights.
    """
    logits, attn = _attention(loaded.model, loaded.params, jnp.asarray(images, jnp.float32))
    return np.asarray(logits), [np.asarray(a, np.float32) for a in attn]


def attention_distances(loaded: loading.LoadedModel, images: np.ndarray,
                        batch_size: int = 16, progress: bool = False) -> np.ndarray:
    """(L, K) mean attention distance in pixels of every head of every block.

    Args:
      loaded: the model.
      images: float32 (B, S, S, 3) preprocessed images to average over.
      batch_size: images per forward pass.
      progress: print "attention: n/N images" to stderr every few seconds.

    Returns:
      (num_layers, num_heads) distances, averaged over the images.
    """
    sums, count, last = None, 0, time.time()
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        _, attn = attention_weights(loaded, chunk)
        d = np.stack([mean_attention_distance(a, patch_grid(loaded), loaded.model.patch_size,
                                              prefix_tokens(loaded)) for a in attn])  # (L, K)
        sums = d * len(chunk) if sums is None else sums + d * len(chunk)
        count += len(chunk)
        if progress and (time.time() - last > _PROGRESS_EVERY_S or count == len(images)):
            print(f"attention: {count}/{len(images)} images", file=sys.stderr, flush=True)
            last = time.time()
    return sums / count


# ------------------------------------------------------------------ the figures
def _mosaic(tiles: np.ndarray, cols: int, gap: int = 1) -> np.ndarray:
    """(n, h, w[, c]) tiles laid out in rows of `cols`, NaN between them."""
    n, h, w = tiles.shape[:3]
    rows = -(-n // cols)
    shape = (rows * (h + gap) - gap, cols * (w + gap) - gap, *tiles.shape[3:])
    out = np.full(shape, np.nan)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return out


def plot_components(components: np.ndarray, out: str, title: str) -> None:
    """Writes the principal components (n, P, P, C) as min-max scaled RGB tiles."""
    lo = components.min(axis=(1, 2, 3), keepdims=True)
    hi = components.max(axis=(1, 2, 3), keepdims=True)
    tiles = (components - lo) / np.maximum(hi - lo, 1e-12)  # (n, P, P, C) in [0, 1]
    if tiles.shape[-1] == 1:
        tiles = np.repeat(tiles, 3, axis=-1)
    cols = min(7, len(tiles))
    mosaic = _mosaic(tiles, cols)
    mosaic = np.where(np.isnan(mosaic), 1.0, mosaic)  # white gaps
    fig = Figure(figsize=(cols * 0.8 + 0.4, -(-len(tiles) // cols) * 0.8 + 0.6), dpi=_DPI)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.85))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.savefig(out, dpi=_DPI)


def plot_posemb_similarity(similarity: np.ndarray, grid: tuple[int, int], out: str,
                           title: str) -> None:
    """Writes the gh×gw tiles of each patch's posemb cosine similarity to all patches."""
    gh, gw = grid
    tiles = similarity.reshape(gh * gw, gh, gw)  # tile of patch i: its row, as the grid
    mosaic = _mosaic(tiles, gw)
    fig = Figure(figsize=(5.2, 4.6), dpi=_DPI)
    ax = fig.add_axes((0.1, 0.08, 0.72, 0.8))
    image = ax.imshow(mosaic, cmap="viridis", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([(gw + 1) * j + (gw - 1) / 2 for j in range(gw)], range(1, gw + 1))
    ax.set_yticks([(gh + 1) * i + (gh - 1) / 2 for i in range(gh)], range(1, gh + 1))
    ax.tick_params(labelsize=6 if gh > 8 else 8, length=0)
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    bar = fig.add_axes((0.86, 0.08, 0.03, 0.8))
    fig.colorbar(image, cax=bar).set_label("cosine similarity")
    fig.suptitle(title, fontsize=9)
    fig.savefig(out, dpi=_DPI)


def plot_attention_distance(distances: np.ndarray, image_size: int, out: str,
                            title: str) -> None:
    """Writes each head's mean attention distance (pixels) against the block's depth."""
    layers, heads = distances.shape
    fig = Figure(figsize=(4.6, 3.6), dpi=_DPI)
    ax = fig.add_axes((0.15, 0.14, 0.6, 0.74))
    depth = np.arange(1, layers + 1)
    for k in range(heads):
        ax.scatter(depth, distances[:, k], s=14, label=f"head {k + 1}")
    ax.set_xlabel("network depth (block)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_xticks(depth)
    # The paper's axis for 224-pixel images runs to 120: about half the image side.
    ax.set_ylim(0, max(0.55 * image_size, 1.1 * float(distances.max())))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.savefig(out, dpi=_DPI)


# ------------------------------------------------------------------ the images
def dataset_images(loaded: loading.LoadedModel, dataset: str, split: str, count: int,
                   data_dir: str | None = None) -> np.ndarray:
    """The first `count` images of a split through the eval transform, (n, S, S, 3)."""
    data = ml_collections.ConfigDict({
        "dataset": dataset, "data_dir": data_dir, "image_size": loaded.image_size,
        "eval_resize_ratio": prediction.eval_resize_ratio(loaded), "prefetch": 1})
    images = []
    for batch in input_pipeline.create_eval_iter(data, split, global_batch_size=count):
        images.append(batch["image"][batch["mask"] > 0])
        break  # the first batch holds the first `count` images
    return np.concatenate(images)


def analyze(checkpoint: str | loading.LoadedModel, out_dir: str,
            image_paths: Sequence[str] = (), *, dataset: str | None = None,
            split: str | None = None, num_images: int = DEFAULT_NUM_IMAGES,
            num_maps: int = DEFAULT_NUM_MAPS, data_dir: str | None = None) -> dict[str, Any]:
    """Writes the figures of a checkpoint into `out_dir`.

    Args:
      checkpoint: a workdir, a `.npz`, or a loaded model.
      out_dir: the folder for the PNGs and `analysis.json` (created if missing).
      image_paths: image files for the attention figures (all are drawn in the maps).
      dataset: else the first `num_images` of this dataset's `split` (a workdir: its own
        dataset by default); the first `num_maps` of them are drawn.
      split: the split (default: the workdir's eval split, else "test").
      num_images: images averaged for the attention distance (dataset mode).
      num_maps: images drawn in `attention_maps.png` (dataset mode).
      data_dir: tfds data_dir.

    Returns:
      What `analysis.json` holds: the files written and the numbers behind them.

    Raises:
      CheckpointError / ImageError / DatasetError / ConfigError: what the message says.
    """
    if image_paths and dataset:
        raise ConfigError("Give image files or --dataset, not both.")
    if num_images < 1 or num_maps < 0:
        raise ConfigError(f"--num_images must be ≥ 1 and --num_maps ≥ 0, got {num_images} "
                          f"and {num_maps}.")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"--out {out_dir} is a file; give a folder.")
    raw = [prediction.load_image(p) for p in image_paths]  # a bad image fails before loading
    loaded = checkpoint
    if not isinstance(loaded, loading.LoadedModel):
        loaded = loading.load_model(checkpoint, dataset=dataset, data_dir=data_dir)
    own = loaded.config
    if not raw and dataset is None and own is not None:
        dataset, data_dir = own.dataset, data_dir or own.get("data_dir")
        split = split or own.eval_split
    os.makedirs(out_dir, exist_ok=True)
    name = os.path.basename(os.path.normpath(checkpoint)) if isinstance(checkpoint, str) else ""
    model = loaded.model
    result: dict[str, Any] = {"checkpoint": name, "image_size": loaded.image_size,
                              "patch_size": model.patch_size, "files": []}

    def path(file: str) -> str:
        result["files"].append(file)
        return os.path.join(out_dir, file)

    kernel = np.asarray(loaded.params["embedding"]["kernel"])
    components, explained = patch_embedding_components(kernel)
    plot_components(components, path("patch_embedding_pca.png"),
                    f"{name}: patch-embedding filters, first {len(components)} principal "
                    "components")
    result["pca_explained_variance"] = explained.tolist()

    grid = patch_grid(loaded)
    similarity = cosine_similarity(position_embeddings(loaded))
    plot_posemb_similarity(similarity, grid, path("posemb_similarity.png"),
                           f"{name}: position embedding similarity ({model.spec.posemb})")

    if raw:
        images = prediction.preprocess(loaded, raw)
        shown = images
    elif dataset:
        images = dataset_images(loaded, dataset, split or "test", num_images, data_dir)
        shown = images[:num_maps]
    else:
        print("note: no images and no --dataset: the attention figures need images; wrote "
              "the weight figures only.", file=sys.stderr, flush=True)
        images = shown = np.zeros((0,))
    if len(images):
        distances = attention_distances(loaded, images, progress=True)
        plot_attention_distance(distances, loaded.image_size, path("attention_distance.png"),
                                f"{name}: mean attention distance ({len(images)} images)")
        result["attention_distance_px"] = distances.tolist()
        result["num_images"] = len(images)
    if len(shown):
        rows = []
        for image in shown:
            maps = attention_maps.attention_maps(loaded, image)
            [(label, p)] = prediction.top_k_from_logits(loaded, maps["logits"][None], 1)[0]
            rows.append((image, maps, f"predicted {label} ({p:.2f})"))
        attention_maps.render(rows, path("attention_maps.png"))
    with open(os.path.join(out_dir, "analysis.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result
