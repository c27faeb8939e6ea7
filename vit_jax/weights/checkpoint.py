"""vit_jax parameter trees ⇄ the official `.npz` layout, and fine-tuning surgery.

The Flax tree of `vit_jax.model.vit` uses the very names of the released checkpoints
(`embedding/kernel`, `cls`, `Transformer/encoderblock_0/MultiHeadDotProductAttention_1/
query/kernel`, ...; the parameter table is `vit_core.params`), so a tree maps onto the file
by joining its paths with "/", except that `scan=True` models keep the blocks stacked under
`Transformer/encoderblock` (`vit_core.layouts.stack_blocks`). Reading takes every layout
`vit_core.layouts.to_official` takes (linen numbering, big_vision, scan-stacked files).

numpy only (no JAX import): the trees may hold jax arrays, which `np.asarray` reads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_core.errors import CheckpointError
from vit_core.files import read_official, write_official
from vit_core.layouts import stack_blocks, to_big_vision, unstack_blocks
from vit_core.npz import flatten, unflatten, write_npz
from vit_core.params import POSEMB_KEY, shape_problems
from vit_core.posemb import resize_posemb
from vit_core.spec import ViTSpec


def params_to_npz_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A vit_jax parameter tree (scan or not) → flat dict in the official layout."""
    flat = {k: np.asarray(v) for k, v in flatten(params).items()}
    return unstack_blocks(flat)


def npz_dict_to_params(flat: Mapping[str, np.ndarray], *, scan: bool = False) -> dict[str, Any]:
    """Flat official-layout dict → nested tree (scan layout if `scan`)."""
    return unflatten(stack_blocks(flat) if scan else dict(flat))


def save_npz(path: str | os.PathLike, params: Mapping[str, Any],
             spec: ViTSpec | None = None) -> None:
    """Saves a vit_jax parameter tree in the official released `.npz` layout.

    Args:
      path: destination `.npz`.
      params: the `params` collection (jax or numpy arrays; scan layout allowed).
      spec: the model's spec, written beside the file (`vit_core.files`) after the arrays
        are checked against it; None writes the arrays alone.
    """
    flat = params_to_npz_dict(params)
    if spec is None:
        write_npz(path, flat)
    else:
        write_official(path, flat, spec)


def load_npz(path: str | os.PathLike, *, scan: bool = False) -> dict[str, Any]:
    """Loads a ViT `.npz` in any layout `to_official` reads, as an official params tree.

    Args:
      path: the `.npz` file: a released file (e.g. `ViT-B_16.npz`), one with linen-numbered
        blocks, or a big_vision ViT checkpoint.
      scan: return the blocks stacked for a `scan=True` model.

    Returns:
      A nested dict of numpy arrays; check it with `check_params` against a model.
    """
    flat, _ = read_official(path)
    return npz_dict_to_params(flat, scan=scan)


def save_big_vision_npz(
    path: str | os.PathLike, params: Mapping[str, Any], *, stacked: bool = False
) -> None:
    """Saves a vit_jax parameter tree as a big_vision ViT `.npz` (see `to_big_vision`).

    Args:
      path: destination `.npz`.
      params: the `params` collection (scan layout allowed).
      stacked: write the blocks as big_vision's `scan=True` models hold them.
    """
    write_npz(path, to_big_vision(params_to_npz_dict(params), stacked=stacked))


def check_params(params: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Asserts two parameter trees have the same keys and shapes.

    Args:
      params: the loaded tree.
      expected: the model's tree (arrays or `jax.ShapeDtypeStruct`s, e.g. from
        `vit_jax.model.vit.param_shapes`).

    Raises:
      CheckpointError: one message naming every missing, unexpected or mis-shaped key.
    """
    got, want = flatten(params), flatten(expected)
    problems = shape_problems({k: np.shape(v) for k, v in got.items()},
                              {k: tuple(v.shape) for k, v in want.items()})
    if problems:
        raise CheckpointError("Checkpoint does not fit the model:\n  " + "\n  ".join(problems))


def adapt_pretrained(
    loaded: Mapping[str, Any], init: Mapping[str, Any], *, reinit_head: bool = True,
    grid: tuple[int, int] | None = None, old_grid: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Fits released weights to a fine-tuning model: new head, resized posemb.

    Args:
      loaded: params from `load_npz` (the pre-trained model, any resolution).
      init: freshly initialised params of the target model (its head and posemb shape
        are taken from here).
      reinit_head: replace `head/*` by the target's (zero) head, for a new class count.
        The released 21k files' `pre_logits/*` are dropped when the target has none.
      grid: the target's (rows, columns) patch grid; None: square.
      old_grid: the loaded posemb's grid; None: square (see `vit_core.posemb`).

    Returns:
      A tree with the target's keys and shapes; `check_params` has been applied.
    """
    got = dict(flatten(loaded))
    want = flatten(init)
    if reinit_head:
        for key in [k for k in got if k.startswith(("head/", "pre_logits/"))]:
            del got[key]
        for key in [k for k in want if k.startswith(("head/", "pre_logits/"))]:
            got[key] = np.asarray(want[key])
    if POSEMB_KEY in got and POSEMB_KEY in want:
        target = tuple(want[POSEMB_KEY].shape)
        if tuple(got[POSEMB_KEY].shape) != target:
            prefix = int("cls" in want) + (want["registers"].shape[1] if "registers" in want
                                           else 0)
            got[POSEMB_KEY] = resize_posemb(np.asarray(got[POSEMB_KEY]),
                                            grid or _square(target[1] - prefix), prefix,
                                            old_grid=old_grid)
    tree = unflatten(got)
    check_params(tree, init)
    return tree


def _square(n: int) -> tuple[int, int]:
    side = math.isqrt(n)
    if side * side != n:
        raise CheckpointError(f"The model's position embedding has {n} patch rows, not a square "
                              "grid: give its grid.")
    return (side, side)
