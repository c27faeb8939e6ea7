"""A checkpoint file together with its spec: the `.npz` and the JSON written beside it.

An official `.npz` stores every parameter, and its shapes fix nearly the whole spec
(`vit_core.params.spec_from_official`); what they cannot fix (the LayerNorm epsilon, the
GELU form, a non-square grid's orientation) is written beside every export as
`NAME.spec.json` (`ViTSpec.to_json`), and read back here when present, so that a model
converted from, say, Hugging Face (epsilon 1e-12, exact GELU) loads as the same function.
A file without one (the released checkpoints) has the official values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from vit_core.errors import CheckpointError, ConfigError
from vit_core.layouts import to_official
from vit_core.npz import atomic_write, read_npz, write_npz
from vit_core.params import spec_from_official
from vit_core.spec import ViTSpec

SPEC_SUFFIX = ".spec.json"


def spec_path(path: str | os.PathLike) -> str:
    """Where the spec of a checkpoint file is written: `x.npz` → `x.spec.json`."""
    return os.path.splitext(os.fspath(path))[0] + SPEC_SUFFIX


def write_spec(path: str | os.PathLike, spec: ViTSpec) -> None:
    """Writes `spec` beside the checkpoint file `path` (atomically)."""
    text = spec.to_json() + "\n"
    atomic_write(spec_path(path), lambda f: f.write(text.encode()))


def read_spec(path: str | os.PathLike) -> ViTSpec | None:
    """The spec written beside the checkpoint file `path`, or None if there is none.

    Raises:
      CheckpointError: the spec file exists but is not a valid spec.
    """
    where = spec_path(path)
    if not os.path.isfile(where):
        return None
    try:
        with open(where, encoding="utf-8") as f:
            text = f.read(1 << 20)  # a spec is a few hundred bytes
        return ViTSpec.from_json(text)
    except (OSError, UnicodeDecodeError, ConfigError) as e:
        raise CheckpointError(f"{where} is not a readable ViT spec: {e}") from None


def read_official(path: str | os.PathLike) -> tuple[dict[str, Any], ViTSpec]:
    """Reads a ViT `.npz` in any layout `vit_core.layouts.to_official` takes, with its spec.

    Args:
      path: the `.npz` (a released file, linen-numbered, big_vision, or one of ours).

    Returns:
      (the official flat dict, its spec: read off the shapes, with the epsilon, GELU and
      image size of the spec file beside it when there is one).

    Raises:
      CheckpointError: an unreadable file, a key or shape that fits no ViT, or a spec file
        that disagrees with the weights.
    """
    saved = read_spec(path)
    image_size = saved.image_size if saved is not None and saved.posemb == "learn" else None
    flat, spec = to_official(read_npz(path), image_size=image_size)
    if saved is not None:
        spec = spec.replace(layer_norm_eps=saved.layer_norm_eps,
                            gelu_approximate=saved.gelu_approximate,
                            image_size=saved.image_size, variant=saved.variant)
        if spec != saved:
            raise CheckpointError(f"{spec_path(path)} describes another model than the "
                                  f"weights in {path}; remove it or write it again.")
    return flat, spec


def write_official(path: str | os.PathLike, flat: Mapping[str, Any], spec: ViTSpec) -> None:
    """Writes official-layout arrays as an `.npz` and their spec beside it.

    Args:
      path: destination `.npz`.
      flat: the arrays (checked against `spec` first: nothing is written otherwise).
      spec: their spec.
    """
    got = spec_from_official(flat, image_size=spec.image_size if spec.posemb == "learn"
                             else None)
    if got.replace(layer_norm_eps=spec.layer_norm_eps, gelu_approximate=spec.gelu_approximate,
                   image_size=spec.image_size) != spec:
        raise CheckpointError("The arrays do not fit the spec they are saved with.")
    write_npz(path, flat)
    write_spec(path, spec)
