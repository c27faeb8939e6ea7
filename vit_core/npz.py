"""The official `.npz` file: safe reading and writing, and the flat key layout.

The released ViT checkpoints of google-research/vision_transformer are flat `.npz` files
whose keys are Flax parameter paths joined with "/". Reading never executes pickled code
and turns every malformed file into one `CheckpointError`; writing is atomic.
numpy only: both `vit_jax` and `vit_torch` read and write the format through here.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy  # the .npy header parser np.load uses

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


# A member's .npy header is a few hundred bytes; numpy's own default cap is 10,000.
_MAX_NPY_HEADER = 10_000
# Deflated members may expand at most this much over the archive's size on disk, plus
# _EXPANSION_ALLOWANCE: float weights barely compress (~1.1x), a zip bomb 1000x.
MAX_EXPANSION = 16
_EXPANSION_ALLOWANCE = 64 << 20
_READ_CHUNK = 16 << 20  # bytes per read: no second full-size copy of a large array


def _member_layout(path: str, info: zipfile.ZipInfo, f: BinaryIO
                   ) -> tuple[np.dtype, tuple[int, ...], bool]:
    """Parses and checks one member's .npy header against the member's size in the archive.

    Returns:
      (dtype, shape, fortran_order); `f` is left at the first data byte.

    Raises:
      CheckpointError: not an .npy, pickled objects, or a shape that its bytes do not hold.
    """
    try:
        version = npy.read_magic(f)
        header = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
        if header is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = header(f, max_header_size=_MAX_NPY_HEADER)
    except ValueError as e:  # numpy's words for a bad magic string or header
        raise CheckpointError(
            f"{path} is not a readable .npz file: member {info.filename} is not a valid .npy "
            f"array ({str(e).splitlines()[0]})") from None
    if dtype.hasobject:
        raise CheckpointError(
            f"{path} contains pickled Python objects; refusing to load it (loading could "
            "execute code). Re-save it with plain numeric arrays.")
    if any(d < 0 for d in shape):
        raise CheckpointError(f"{path} is not a readable .npz file: member {info.filename} "
                              f"declares the shape {shape}.")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    held = info.file_size - f.tell()
    if nbytes != held:
        raise CheckpointError(
            f"{path} is not a readable .npz file: member {info.filename} declares shape "
            f"{shape} of {dtype} ({nbytes} bytes) but holds {held} bytes (truncated or forged).")
    return dtype, shape, fortran


def _read_member(f: BinaryIO, dtype: np.dtype, shape: tuple[int, ...], fortran: bool
                 ) -> np.ndarray:
    """The array data after the header, read in place (sizes already checked)."""
    flat = np.empty(math.prod(shape), dtype)
    raw = flat.view(np.uint8)  # (nbytes,)
    for start in range(0, raw.size, _READ_CHUNK):
        chunk = raw[start:start + _READ_CHUNK]
        if f.readinto(memoryview(chunk)) != chunk.size:
            raise EOFError("the member ends early")
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a flat `.npz` into {key: array}, never executing pickled code.

    The file is untrusted: every member's .npy header is parsed and checked against the
    member's size in the zip directory before anything is allocated, and the deflated
    content may not expand beyond MAX_EXPANSION times the file's size (plus 64 MiB), so a
    forged shape or a zip bomb is refused in bounded memory and time.

    Args:
      path: the `.npz` file.

    Returns:
      A dict from "/"-joined parameter names to numpy arrays.

    Raises:
      CheckpointError: missing, not a zip archive (empty, truncated, a pickle, ...),
        corrupt inside, holding pickled objects or members that are not .npy arrays, or
        declaring sizes its bytes do not hold.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file not found: {path}")
    # A file that is not a zip archive is told apart first, with a guess at what it is.
    with open(path, "rb") as f:
        is_zip = f.read(4).startswith(_ZIP_MAGIC)
    if not (is_zip and zipfile.is_zipfile(path)):
        raise _not_npz_error(path)
    budget = MAX_EXPANSION * os.path.getsize(path) + _EXPANSION_ALLOWANCE
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            declared = sum(i.file_size for i in infos if i.compress_type != zipfile.ZIP_STORED)
            if declared > budget:
                raise CheckpointError(
                    f"{path} is not a usable .npz file: its compressed members declare "
                    f"{declared} bytes uncompressed, more than {MAX_EXPANSION}x its size on disk "
                    f"(a zip bomb?); re-save it with numpy.savez (uncompressed).")
            for info in infos:
                if not info.filename.endswith(".npy") or info.is_dir():
                    raise CheckpointError(
                        f"{path} is not a readable .npz file: member {info.filename} is not an "
                        ".npy array.")
                key = info.filename[:-len(".npy")]
                if key in arrays:
                    raise CheckpointError(f"{path} is not a readable .npz file: member "
                                          f"{info.filename} appears twice.")
                with archive.open(info) as f:
                    layout = _member_layout(path, info, f)
                    arrays[key] = _recover_bfloat16(_read_member(f, *layout))
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError,
            RuntimeError) as e:  # CRC, deflate stream, unsupported compression, encryption
        raise CheckpointError(
            f"{path} is not a readable .npz file (truncated or corrupt?): {e}"
        ) from None
    return arrays


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


