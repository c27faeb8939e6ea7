"""Checkpoint layouts: the official `.npz` (the interchange format) and those mapped onto it.

The released ViT checkpoints of google-research/vision_transformer are flat `.npz` files
whose keys are Flax parameter paths joined with "/" (`embedding/kernel`, `cls`,
`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel`, ...). The
Flax tree of `vit_jax.models` uses the very same names, so the key map here is the
identity, except that `scan=True` models keep the blocks stacked under
`Transformer/encoderblock` (leading layer axis) and are unstacked for the file.

`to_official` also reads two other layouts of the same weights (see "Other layouts"
below): the linen numbering of the block's sub-modules (the official repository's
current code) and big_vision's ViT; `to_big_vision` writes the latter back.

numpy (and scipy) only, on purpose: `vit_torch` reads and writes the format through
this module without importing JAX.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_core.errors import CheckpointError
from vit_core.npz import SEP, flatten, read_npz, unflatten, write_npz
from vit_core.posemb import resize_posemb

_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/(.+)$")
_STACKED = "Transformer/encoderblock/"


# ----------------------------------------------------------------- scan layout
def unstack_blocks(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Scan layout (`Transformer/encoderblock/...`, leading layer axis) → per-block keys."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        if name.startswith(_STACKED):
            rest = name[len(_STACKED):]
            for i in range(value.shape[0]):
                out[f"Transformer/encoderblock_{i}/{rest}"] = value[i]
        else:
            out[name] = value
    return out


def stack_blocks(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Per-block keys → scan layout, the inverse of `unstack_blocks`."""
    out: dict[str, Any] = {}
    per_block: dict[str, dict[int, Any]] = {}
    for name, value in flat.items():
        match = _BLOCK.match(name)
        if match:
            per_block.setdefault(match.group(2), {})[int(match.group(1))] = value
        else:
            out[name] = value
    for rest, layers in per_block.items():
        if sorted(layers) != list(range(len(layers))):
            raise CheckpointError(f"Blocks of {rest!r} are not numbered 0..N-1: {sorted(layers)}")
        out[_STACKED + rest] = np.stack([np.asarray(layers[i]) for i in range(len(layers))])
    return out


def params_to_npz_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A vit_jax parameter tree (scan or not) → flat dict in the official layout."""
    flat = {k: np.asarray(v) for k, v in flatten(params).items()}
    return unstack_blocks(flat)


def npz_dict_to_params(flat: Mapping[str, np.ndarray], *, scan: bool = False) -> dict[str, Any]:
    """Flat official-layout dict → nested tree (scan layout if `scan`)."""
    return unflatten(stack_blocks(flat) if scan else dict(flat))


def save_npz(path: str | os.PathLike, params: Mapping[str, Any]) -> None:
    """Saves a vit_jax parameter tree in the official released `.npz` layout.

    Args:
      path: destination `.npz`.
      params: the `params` collection (jax or numpy arrays; scan layout allowed).
    """
    write_npz(path, params_to_npz_dict(params))


def load_npz(path: str | os.PathLike, *, scan: bool = False) -> dict[str, Any]:
    """Loads a ViT `.npz` in any layout `to_official` reads, as an official params tree.

    Args:
      path: the `.npz` file: a released file (e.g. `ViT-B_16.npz`), one with linen-numbered
        blocks, or a big_vision ViT checkpoint.
      scan: return the blocks stacked for a `scan=True` model.

    Returns:
      A nested dict of numpy arrays; check it with `check_params` against a model.
    """
    return npz_dict_to_params(to_official(read_npz(path)), scan=scan)


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


# ------------------------------------------------------------------------- checking
def check_params(params: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Asserts two parameter trees have the same keys and shapes.

    Args:
      params: the loaded tree.
      expected: the model's tree (arrays or `jax.ShapeDtypeStruct`s, e.g. from
        `vit_jax.models.param_shapes`).

    Raises:
      CheckpointError: one message naming every missing, unexpected or mis-shaped key.
    """
    got, want = flatten(params), flatten(expected)
    problems = _shape_problems({k: np.shape(v) for k, v in got.items()},
                               {k: tuple(v.shape) for k, v in want.items()})
    if problems:
        raise CheckpointError("Checkpoint does not fit the model:\n  " + "\n  ".join(problems))


def _shape_problems(
    got: Mapping[str, tuple[int, ...]], want: Mapping[str, tuple[int, ...]]
) -> list[str]:
    """Every missing, unexpected or mis-shaped key of `got` against `want`, in words."""
    problems = [f"missing key {k} (model expects shape {want[k]})"
                for k in sorted(set(want) - set(got))]
    problems += [f"unexpected key {k} (shape {got[k]})" for k in sorted(set(got) - set(want))]
    problems += [f"shape mismatch at {k}: checkpoint {got[k]}, model {want[k]}"
                 for k in sorted(set(got) & set(want)) if tuple(got[k]) != tuple(want[k])]
    return problems


POSEMB_KEY = "Transformer/posembed_input/pos_embedding"


def adapt_pretrained(
    loaded: Mapping[str, Any], init: Mapping[str, Any], *, reinit_head: bool = True
) -> dict[str, Any]:
    """Fits released weights to a fine-tuning model: new head, resized posemb.

    Args:
      loaded: params from `load_npz` (the pre-trained model, any resolution).
      init: freshly initialised params of the target model (its head and posemb shape
        are taken from here).
      reinit_head: replace `head/*` by the target's (zero) head, for a new class count.
        The released 21k files' `pre_logits/*` are dropped when the target has none.

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
        target = want[POSEMB_KEY].shape
        if tuple(got[POSEMB_KEY].shape) != tuple(target):
            prefix = 1 if "cls" in want else 0
            side = math.isqrt(target[1] - prefix)
            got[POSEMB_KEY] = resize_posemb(np.asarray(got[POSEMB_KEY]), (side, side), prefix)
    tree = unflatten(got)
    check_params(tree, init)
    return tree


def infer_architecture(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Reads the architecture off an official-layout dict's shapes (no config needed).

    Args:
      flat: official layout with per-block keys (`read_npz` of a released file, or
        `to_official` of any layout it accepts).

    Returns:
      dict with patch_size, hidden_size, num_layers, num_heads, mlp_dim, classifier
      ("token", "gap" or "map"), representation_size, num_classes and image_size (the
      posemb grid × patch size; None without a learned posemb), and `posemb="sincos2d"`
      when there is no learned posemb ("learn", the model's default, is not named, so the
      dict also fits a model without that option).
    """
    try:
        kernel = flat["embedding/kernel"]  # (P, P, C, D)
        block = "Transformer/encoderblock_0/"
        query = flat[block + "MultiHeadDotProductAttention_1/query/kernel"]  # (D, K, Dh)
        mlp = flat[block + "MlpBlock_3/Dense_0/kernel"]  # (D, mlp)
    except KeyError as e:
        raise CheckpointError(
            f"Not an official-layout ViT checkpoint: key {e} is missing."
        ) from None
    num_layers = len({m.group(1) for m in map(_BLOCK.match, flat) if m})
    patch = int(np.shape(kernel)[0])
    classifier = "token" if "cls" in flat else "map" if MAP_PROBE_KEY in flat else "gap"
    image_size = None
    if POSEMB_KEY in flat:
        tokens = int(np.shape(flat[POSEMB_KEY])[1]) - (classifier == "token")
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise CheckpointError(
                f"{POSEMB_KEY} has {tokens} patch positions, not a square grid."
            )
        image_size = side * patch
    arch = {
        "patch_size": patch, "hidden_size": int(np.shape(kernel)[3]),
        "num_layers": num_layers, "num_heads": int(np.shape(query)[1]),
        "mlp_dim": int(np.shape(mlp)[1]), "classifier": classifier,
        "representation_size": int(np.shape(flat["pre_logits/kernel"])[1])
        if "pre_logits/kernel" in flat else None,
        "num_classes": int(np.shape(flat["head/kernel"])[1]) if "head/kernel" in flat else 0,
        "image_size": image_size,
    }
    if POSEMB_KEY not in flat:
        arch["posemb"] = "sincos2d"  # fixed, computed by the model: nothing stored
    return arch


# ---------------------------------------------------------------------- other layouts
# The sub-modules of an encoder block, in call order. The released files were written by
# pre-linen Flax, which numbered sub-modules across types; linen numbers them per type,
# and so do the official repository's current code (it loads the released files through
# `flax.training.checkpoints.convert_pre_linen`) and big_vision.
RELEASED_BLOCK_NAMES = (
    "LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"
)
LINEN_BLOCK_NAMES = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")

# big_vision (models/vit.py) → official; every key not named here is the same in both
# (`embedding/*`, `cls`, `Transformer/encoder_norm/*`, `pre_logits/*`, `head/*`, `MAPHead_0/*`):
#   pos_embedding (1, h*w, D)            → Transformer/posembed_input/pos_embedding; with a
#                                          class token (pool_type "tok") a zero row is put in
#                                          front: big_vision adds the posemb before
#                                          concatenating the token, the official model after.
#   Transformer/pos_embedding            → the same (big_vision files before 2022).
#   Transformer/encoderblock/X (L, ...)  → Transformer/encoderblock_{i}/X (scan=True models).
#   encoderblock_{i}/LINEN_BLOCK_NAMES   → encoderblock_{i}/RELEASED_BLOCK_NAMES.
#   prefixes params/ (a training checkpoint; its optimizer state is dropped), opt/target/
#   (older Flax-optimizer checkpoints)  → none.
# Transposes: none. Both are Flax trees with the same kernel layouts (conv HWIO, Dense
# (in, out), attention DenseGeneral (D, K, Dh) and (K, Dh, D)).
BIG_VISION_POSEMB_KEYS = ("pos_embedding", "Transformer/pos_embedding")
PARAM_PREFIXES = ("params/", "opt/target/")
MAP_PROBE_KEY = "MAPHead_0/probe"


def official_shapes(arch: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every key of the official layout and its shape, for an architecture.

    Args:
      arch: as `infer_architecture` returns (image_size may be None only without a
        learned posemb).

    Returns:
      {key: shape}; `check_shapes` compares a flat dict with it.
    """
    p, d, k = arch["patch_size"], arch["hidden_size"], arch["num_heads"]
    dh = d // k
    token = arch["classifier"] == "token"
    shapes: dict[str, tuple[int, ...]] = {
        "embedding/kernel": (p, p, 3, d), "embedding/bias": (d,),
        "Transformer/encoder_norm/scale": (d,), "Transformer/encoder_norm/bias": (d,),
    }
    if token:
        shapes["cls"] = (1, 1, d)
    if arch.get("posemb", "learn") == "learn":
        grid = (arch["image_size"] // p) ** 2
        shapes[POSEMB_KEY] = (1, int(token) + grid, d)

    def attention(prefix: str) -> None:  # flax MultiHeadDotProductAttention / DenseGeneral
        for name in ("query", "key", "value"):
            shapes[f"{prefix}{name}/kernel"] = (d, k, dh)
            shapes[f"{prefix}{name}/bias"] = (k, dh)
        shapes[f"{prefix}out/kernel"] = (k, dh, d)
        shapes[f"{prefix}out/bias"] = (d,)

    def norm_and_mlp(norm: str, mlp: str) -> None:
        shapes.update({f"{norm}/scale": (d,), f"{norm}/bias": (d,)})
        shapes.update({f"{mlp}/Dense_0/kernel": (d, arch["mlp_dim"]),
                       f"{mlp}/Dense_0/bias": (arch["mlp_dim"],),
                       f"{mlp}/Dense_1/kernel": (arch["mlp_dim"], d), f"{mlp}/Dense_1/bias": (d,)})

    ln0, mha, ln2, mlp_block = RELEASED_BLOCK_NAMES
    for i in range(arch["num_layers"]):
        block = f"Transformer/encoderblock_{i}/"
        shapes.update({f"{block}{ln0}/scale": (d,), f"{block}{ln0}/bias": (d,)})
        attention(f"{block}{mha}/")
        norm_and_mlp(block + ln2, block + mlp_block)
    if arch["classifier"] == "map":  # big_vision's MAPHead: a probe token attends to all
        shapes[MAP_PROBE_KEY] = (1, 1, d)
        attention("MAPHead_0/MultiHeadDotProductAttention_0/")
        norm_and_mlp("MAPHead_0/LayerNorm_0", "MAPHead_0/MlpBlock_0")
    width = d
    if arch["representation_size"]:
        width = arch["representation_size"]
        shapes.update({"pre_logits/kernel": (d, width), "pre_logits/bias": (width,)})
    if arch["num_classes"]:
        n = arch["num_classes"]
        shapes.update({"head/kernel": (width, n), "head/bias": (n,)})
    return shapes


def check_shapes(flat: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Asserts every key and shape of an official flat dict against its own architecture.

    Args:
      flat: official layout (per-block keys).
      what: how the message names `flat` ("The checkpoint", ...).

    Returns:
      `infer_architecture(flat)`.

    Raises:
      CheckpointError: one message naming every missing, unexpected or mis-shaped key
        ("model" there is the architecture read off the embedding and first block).
    """
    arch = infer_architecture(flat)
    problems = _shape_problems({k: np.shape(v) for k, v in flat.items()}, official_shapes(arch))
    if problems:
        raise CheckpointError(f"{what} is not a consistent ViT: " + "; ".join(problems))
    return arch


def _strip_prefix(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Only the parameters, without a big_vision training checkpoint's prefix."""
    if "embedding/kernel" not in flat:
        for prefix in PARAM_PREFIXES:
            if prefix + "embedding/kernel" in flat:
                return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
    return dict(flat)


def block_numbering(flat: Mapping[str, Any]) -> str:
    """Which sub-module names the per-block keys use: "released" or "linen".

    Raises:
      CheckpointError: a block with other sub-modules, or blocks that mix the two.
    """
    modules: dict[int, set[str]] = {}
    for key in flat:
        match = _BLOCK.match(key)
        if match:
            modules.setdefault(int(match.group(1)), set()).add(match.group(2).split(SEP)[0])
    kinds: dict[str, list[int]] = {}
    for i, names in sorted(modules.items()):
        if names == set(RELEASED_BLOCK_NAMES):
            kinds.setdefault("released", []).append(i)
        elif names == set(LINEN_BLOCK_NAMES):
            kinds.setdefault("linen", []).append(i)
        else:
            raise CheckpointError(
                f"Transformer/encoderblock_{i} has sub-modules {sorted(names)}; expected "
                f"{list(RELEASED_BLOCK_NAMES)} (released files) or {list(LINEN_BLOCK_NAMES)} "
                "(linen numbering)."
            )
    if len(kinds) > 1:
        raise CheckpointError(
            f"The encoder blocks mix two numberings: released names in blocks "
            f"{kinds['released']}, linen names in blocks {kinds['linen']}; the file is corrupt."
        )
    return next(iter(kinds), "released")


def _rename_blocks(flat: Mapping[str, Any], source: tuple, target: tuple) -> dict[str, Any]:
    rename = dict(zip(source, target, strict=True))
    out: dict[str, Any] = {}
    for key, value in flat.items():
        match = _BLOCK.match(key)
        if match:
            module, rest = match.group(2).split(SEP, 1)
            key = f"Transformer/encoderblock_{match.group(1)}/{rename[module]}/{rest}"
        out[key] = value
    return out


def to_official(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Any ViT layout this module reads → the official layout, every key and shape checked.

    Accepted: the official layout (released numbering, or the linen numbering
    `LINEN_BLOCK_NAMES`), per-block or stacked; big_vision's ViT (`pos_embedding` at the
    top, linen numbering, per-block or `scan`-stacked, optionally under `params/` or
    `opt/target/`), pool types tok/gap/map, posemb learn or sincos2d. The key map is
    written out above `BIG_VISION_POSEMB_KEYS`.

    Args:
      flat: {"a/b": array} from `read_npz`.

    Returns:
      The official flat dict (per-block keys, released numbering) of the same model.

    Raises:
      CheckpointError: mixed numberings, two position embeddings, or any key or shape that
        does not fit the architecture read off the file.
    """
    flat = unstack_blocks(_strip_prefix(flat))
    if block_numbering(flat) == "linen":
        flat = _rename_blocks(flat, LINEN_BLOCK_NAMES, RELEASED_BLOCK_NAMES)
    found = [k for k in (POSEMB_KEY, *BIG_VISION_POSEMB_KEYS) if k in flat]
    if len(found) > 1:
        raise CheckpointError(f"Two position embeddings in one checkpoint: {found}.")
    if found and found[0] != POSEMB_KEY:
        flat[POSEMB_KEY] = _posemb_to_official(flat.pop(found[0]), has_cls="cls" in flat)
    check_shapes(flat, "The checkpoint")
    return flat


def _posemb_to_official(posemb: np.ndarray, *, has_cls: bool) -> np.ndarray:
    """big_vision's (1, h*w, D) posemb → official (1, [1 +] h*w, D)."""
    n = posemb.shape[1]
    if not has_cls or math.isqrt(n) ** 2 != n:
        # No class token, or an old big_vision file that already has its row (h*w + 1).
        return posemb
    return np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)  # (1, 1 + h*w, D)


def to_big_vision(flat: Mapping[str, Any], *, stacked: bool = False) -> dict[str, Any]:
    """Official layout → big_vision's ViT layout (the inverse of `to_official`).

    With a class token, its posemb row is added to `cls` (as big_vision's own
    `fix_old_checkpoints` does), which computes the same first token.

    Args:
      flat: official flat dict (per-block keys), e.g. `params_to_npz_dict(params)`.
      stacked: stack the blocks under `Transformer/encoderblock/` (big_vision `scan=True`).

    Returns:
      {key: array} as big_vision's `utils.load_params` reads it from an `.npz` (no prefix).
    """
    check_shapes(flat, "The parameter tree")
    out = _rename_blocks(flat, RELEASED_BLOCK_NAMES, LINEN_BLOCK_NAMES)
    if POSEMB_KEY in out:
        posemb = np.asarray(out.pop(POSEMB_KEY))
        if "cls" in out:
            row, posemb = posemb[:, :1], posemb[:, 1:]  # (1, 1, D), (1, h*w, D)
            # A zero row (as `to_official` writes) is not added: the round trip stays
            # bit-exact even for a -0.0 in `cls`.
            if np.any(row):
                out["cls"] = np.asarray(out["cls"]) + row
        out[BIG_VISION_POSEMB_KEYS[0]] = posemb
    return stack_blocks(out) if stacked else out
