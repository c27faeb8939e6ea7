"""The fixed 2-D sin-cos position embedding (`posemb="sincos2d"`), in numpy only.

Framework-free on purpose: `vit_jax.model.vit` and `vit_torch.model` both add this very
table, so the two frameworks differ in nothing but their matmuls. The formula is
big_vision's `posemb_sincos_2d` (google-research/big_vision, `models/vit.py`, after MoCo
v3), computed step by step in float32 as big_vision does in `jnp`.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from vit_core.errors import CheckpointError

TEMPERATURE = 10_000.0


@functools.lru_cache(maxsize=32)
def sincos_2d(h: int, w: int, width: int, temperature: float = TEMPERATURE) -> np.ndarray:
    """The (1, h·w, width) float32 sin-cos table of an h×w patch grid (row-major tokens).

    Each quarter of the channels holds sin(x·ω), cos(x·ω), sin(y·ω), cos(y·ω) for the
    column x and row y of the patch, with ω_i = temperature^(-i / (width/4 − 1)),
    i = 0 … width/4 − 1 (big_vision divides by width/4 − 1, MoCo v3 by width/4).

    Args:
      h, w: the patch grid (image height and width divided by the patch size).
      width: D, the token width; a multiple of 4.
      temperature: the longest wavelength's scale (big_vision: 10 000).

    Returns:
      A read-only (1, h·w, width) float32 array (cached: callers must not write it).

    Raises:
      ValueError: `width` is not a multiple of 4 (or smaller than 8).
    """
    if width % 4 or width < 8:
        raise ValueError(f"The sincos2d position embedding needs a width that is a multiple of 4 "
                         f"and at least 8; got {width}.")
    quarter = width // 4
    y, x = np.mgrid[:h, :w].astype(np.float32)  # (h, w) each: row and column of every patch
    omega = np.arange(quarter, dtype=np.float32) / np.float32(quarter - 1)  # (width/4,)
    omega = np.float32(1.0) / np.float32(temperature) ** omega
    y = y.reshape(-1, 1) * omega  # (h·w, width/4)
    x = x.reshape(-1, 1) * omega  # (h·w, width/4)
    table = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)  # (h·w, D)
    table = table.astype(np.float32)[None]  # (1, h·w, D)
    table.flags.writeable = False
    return table


def resize_posemb(
    posemb: np.ndarray, new_grid: tuple[int, int], num_prefix_tokens: int = 1,
    old_grid: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resizes a (1, prefix + h*w, D) position embedding to a new (h', w') patch grid.

    The same resampling as the official fine-tuning code: the grid part is zoomed with
    `scipy.ndimage.zoom(order=1)` (linear, corner-aligned), the prefix tokens' embeddings
    (class token, registers) are kept unchanged. This is not `F.interpolate`'s
    half-pixel-centred bilinear.

    Args:
      posemb: (1, prefix + h*w, D) array.
      new_grid: (h', w') patches of the new resolution (image size // patch size).
      num_prefix_tokens: the class token and registers in front (0 for "gap"/"map").
      old_grid: (h, w) of `posemb`; None: square (the released checkpoints' grids are).

    Returns:
      A (1, prefix + h'*w', D) float array of the input dtype.

    Raises:
      CheckpointError: the rows do not make `old_grid` (or, when None, a square).
    """
    import scipy.ndimage  # only needed here; keeps the module import light

    prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    n = grid.shape[0]
    if old_grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise CheckpointError(f"Position embedding grid of {n} tokens is not square: give "
                                  "the grid it was trained at (old_grid).")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise CheckpointError(f"Position embedding of {n} patch rows is not a "
                              f"{old_grid[0]}x{old_grid[1]} grid.")
    if tuple(old_grid) == tuple(new_grid):
        return posemb
    gh, gw = new_grid
    grid = grid.reshape(*old_grid, -1)  # (h, w, D)
    zoom = (gh / old_grid[0], gw / old_grid[1], 1)
    grid = scipy.ndimage.zoom(grid, zoom, order=1)  # (h', w', D), as the official code calls it
    grid = grid.reshape(1, gh * gw, -1)
    return np.concatenate([prefix, grid], axis=1)
