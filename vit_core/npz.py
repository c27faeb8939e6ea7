"""The official `.npz` file: safe reading and writing, and the flat key layout.

The released ViT checkpoints of google-research/vision_transformer are flat `.npz` files
whose keys are Flax parameter paths joined with "/". Reading never executes pickled code
and turns every malformed file into one `CheckpointError`; writing is atomic.
numpy only: both `vit_jax` and `vit_torch` read and write the format through here.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

from vit_core.errors import CheckpointError

SEP = "/"


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


def _recover_bfloat16(array: np.ndarray) -> np.ndarray:
    """numpy writes bfloat16 arrays (e.g. big_vision's bf16 params) as 2-byte void: undo it."""
    if array.dtype.kind != "V" or array.dtype.itemsize != 2 or array.dtype.names:
        return array
    import ml_dtypes  # numpy-only (no JAX), installed with jax; needed only for such files

    return array.view(ml_dtypes.bfloat16)


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
            return {key: _recover_bfloat16(data[key]) for key in data.files}
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


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Writes a file through `write(f)`: a temp file renamed into place, never half-written.

    The directory is created if missing, and the file gets the mode any new file gets
    (0666 minus the umask), not mkstemp's 0600. `vit_torch` writes its files through this.

    Args:
      path: destination; a crash mid-write never leaves a partial file under this name.
      write: writes the whole content to the binary file object it is given.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_npz(path: str | os.PathLike, flat: Mapping[str, Any]) -> None:
    """Writes {key: array} as an uncompressed `.npz`, atomically (temp file + rename).

    Args:
      path: destination; a crash mid-write never leaves a partial file under this name.
      flat: "/"-joined parameter names to arrays (anything `np.asarray` accepts).
    """
    arrays = {key: np.asarray(flat[key]) for key in sorted(flat)}  # stable file order
    atomic_write(path, lambda f: np.savez(f, **arrays))


# ------------------------------------------------------------------ tree <-> flat keys
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


