"""The official `.npz` checkpoint layout: reading, writing, checking, resizing.

The released ViT checkpoints of google-research/vision_transformer are flat `.npz` files
whose keys are Flax parameter paths joined with "/" (`embedding/kernel`, `cls`,
`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel`, ...). The
Flax tree of `vit_jax.models` uses the very same names, so the key map here is the
identity, except that `scan=True` models keep the blocks stacked under
`Transformer/encoderblock` (leading layer axis) and are unstacked for the file.

numpy (and scipy) only, on purpose: `vit_torch` reads and writes the format through
this module without importing JAX.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

SEP = "/"
_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/(.+)$")
_STACKED = "Transformer/encoderblock/"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


# --------------------------------------------------------------------------- file I/O
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first bytes (the second: empty zip)
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_MAGIC = tuple(b"\x80" + bytes([v]) for v in range(2, 6))  # pickle protocols 2..5


def _not_npz_error(path: str) -> CheckpointError:
    """The error for a file that is not a zip archive: its size, first bytes and a guess."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if size == 0:
        guess = "the file is empty"
    elif head.startswith(_ZIP_MAGIC):
        guess = "it starts as a zip archive but lacks the zip directory at its end (truncated)"
    elif head.startswith(_NPY_MAGIC):
        guess = "it is a single .npy array, not an .npz archive of named arrays"
    elif head.startswith(_PICKLE_MAGIC):
        guess = "it looks like a Python pickle, which is never loaded (it could execute code)"
    else:
        guess = "an unknown format"
    return CheckpointError(
        f"Not a valid .npz (zip) file: {path} ({size} bytes, first bytes {head!r}); {guess}."
    )


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a flat `.npz` into {key: array}, never executing pickled code.

    Args:
      path: the `.npz` file.

    Returns:
      A dict from "/"-joined parameter names to numpy arrays.

    Raises:
      CheckpointError: missing, not a zip archive (empty, truncated, a pickle, ...),
        corrupt inside, or holding pickled objects.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file not found: {path}")
    # np.load takes any non-zip, non-.npy file for a pickle (allow_pickle=False then says
    # "pickled data"), so a file that is not a zip archive is told apart first.
    with open(path, "rb") as f:
        is_zip = f.read(4).startswith(_ZIP_MAGIC)
    if not (is_zip and zipfile.is_zipfile(path)):
        raise _not_npz_error(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except ValueError as e:  # numpy's refusal of object arrays
        if "pickle" in str(e).lower():
            raise CheckpointError(
                f"{path} contains pickled Python objects; refusing to load it (loading "
                "could execute code). Re-save it with plain numeric arrays."
            ) from None
        raise CheckpointError(f"{path} is not a readable .npz file: {e}") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise CheckpointError(
            f"{path} is not a readable .npz file (truncated or corrupt?): {e}"
        ) from None


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_npz(path: str | os.PathLike, flat: Mapping[str, Any]) -> None:
    """Writes {key: array} as an uncompressed `.npz`, atomically (temp file + rename).

    Args:
      path: destination; a crash mid-write never leaves a partial file under this name.
      flat: "/"-joined parameter names to arrays (anything `np.asarray` accepts).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    arrays = {key: np.asarray(flat[key]) for key in sorted(flat)}  # stable file order
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        # mkstemp makes the file 0600; give it the mode any new file gets (0666 - umask).
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# --------------------------------------------------------------------- tree <-> flat
def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → {"a/b/c": leaf}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{SEP}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a/b/c": leaf} → nested dict."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(SEP)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


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
    """Loads an official-layout `.npz` (e.g. a released `ViT-B_16.npz`) as a params tree.

    Args:
      path: the `.npz` file.
      scan: return the blocks stacked for a `scan=True` model.

    Returns:
      A nested dict of numpy arrays; check it with `check_params` against a model.
    """
    return npz_dict_to_params(read_npz(path), scan=scan)


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
    problems = [f"missing key {k} (model expects shape {tuple(want[k].shape)})"
                for k in sorted(set(want) - set(got))]
    problems += [f"unexpected key {k} (shape {tuple(np.shape(got[k]))})"
                 for k in sorted(set(got) - set(want))]
    problems += [
        f"shape mismatch at {k}: checkpoint {tuple(np.shape(got[k]))}, "
        f"model {tuple(want[k].shape)}"
        for k in sorted(set(got) & set(want))
        if tuple(np.shape(got[k])) != tuple(want[k].shape)
    ]
    if problems:
        raise CheckpointError("Checkpoint does not fit the model:\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------- position embeddings
def resize_posemb(
    posemb: np.ndarray, new_grid: tuple[int, int], num_prefix_tokens: int = 1
) -> np.ndarray:
    """Resizes a (1, prefix + h*w, D) position embedding to a new (h', w') patch grid.

    The same resampling as the official fine-tuning code: the grid part is zoomed with
    `scipy.ndimage.zoom(order=1)` (linear, corner-aligned), the class-token embedding is
    kept unchanged. This is not `F.interpolate`'s half-pixel-centred bilinear.

    Args:
      posemb: (1, prefix + h*h, D) array (the released checkpoints' grids are square).
      new_grid: (h', w') patches of the new resolution (image size // patch size).
      num_prefix_tokens: 1 with a class token ("token" classifier), 0 for "gap".

    Returns:
      A (1, prefix + h'*w', D) float array of the input dtype.
    """
    import scipy.ndimage  # only needed here; keeps the module import light

    prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    old = math.isqrt(grid.shape[0])
    if old * old != grid.shape[0]:
        raise CheckpointError(f"Position embedding grid of {grid.shape[0]} tokens is not square.")
    if (old, old) == tuple(new_grid):
        return posemb
    gh, gw = new_grid
    grid = grid.reshape(old, old, -1)  # (h, w, D)
    zoom = (gh / old, gw / old, 1)
    grid = scipy.ndimage.zoom(grid, zoom, order=1)  # (h', w', D), as the official code calls it
    grid = grid.reshape(1, gh * gw, -1)
    return np.concatenate([prefix, grid], axis=1)


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
      flat: from `read_npz` (per-block keys).

    Returns:
      dict with patch_size, hidden_size, num_layers, num_heads, mlp_dim, classifier,
      representation_size, num_classes and image_size (the posemb grid × patch size).
    """
    try:
        kernel = flat["embedding/kernel"]  # (P, P, C, D)
        query = flat["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"]
        mlp = flat["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"]  # (D, mlp)
        posemb = flat[POSEMB_KEY]
    except KeyError as e:
        raise CheckpointError(f"Not an official ViT checkpoint: key {e} is missing.") from None
    num_layers = len({m.group(1) for m in map(_BLOCK.match, flat) if m})
    prefix = 1 if "cls" in flat else 0
    side = math.isqrt(posemb.shape[1] - prefix)
    return {
        "patch_size": int(kernel.shape[0]), "hidden_size": int(kernel.shape[3]),
        "num_layers": num_layers, "num_heads": int(query.shape[1]), "mlp_dim": int(mlp.shape[1]),
        "classifier": "token" if prefix else "gap",
        "representation_size": int(flat["pre_logits/kernel"].shape[1])
        if "pre_logits/kernel" in flat else None,
        "num_classes": int(flat["head/kernel"].shape[1]) if "head/kernel" in flat else 0,
        "image_size": side * int(kernel.shape[0]),
    }
