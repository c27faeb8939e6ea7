"""Torch tensors ⇄ the official `.npz` layout, through the core's numpy key maps.

The key maps themselves (the parameter table and every foreign layout) live in
`vit_core.params` and `vit_core.layouts`, shared with `vit_jax`; this module only moves
tensors to numpy arrays and back (bit-exact, bfloat16 through float32, which holds it
exactly), and loads and saves `vit_torch` models. Files (`.pt`, `.safetensors`, HF
directories) are read and written by `vit_torch.files`; the CLI is `python -m vit_torch`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch

from vit_core import layouts
from vit_core.errors import CheckpointError, ConfigError
from vit_core.npz import read_npz, write_npz
from vit_core.params import POSEMB_KEY, check_keys, official_shapes
from vit_core.posemb import resize_posemb
from vit_core.spec import ViTSpec
from vit_core.variants import HYBRIDS, VARIANTS, decode_variant
from vit_torch.model import VisionTransformer


def to_numpy(sd: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A state dict → numpy arrays (bfloat16 as float32, which holds it exactly)."""
    out = {}
    for key, t in sd.items():
        t = t.detach().cpu()
        out[key] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    return out


def to_torch(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """numpy arrays → tensors that own C-contiguous, writable memory."""
    return {k: torch.from_numpy(np.array(v, order="C")) for k, v in arrays.items()}


def npz_to_state_dict(flat: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Official-layout arrays → a `vit_torch` (timm-named) state dict, bit-exact.

    Raises:
      CheckpointError: a missing, extra or mis-shaped key (named in the message).
    """
    return to_torch(layouts.official_to_timm(flat))


def state_dict_to_npz(
    sd: Mapping[str, torch.Tensor], *, num_heads: int, no_embed_class: bool = False
) -> dict[str, np.ndarray]:
    """A `vit_torch` or timm state dict → official-layout arrays (bit-exact, dtype kept).

    Args:
      sd: `model.state_dict()` or a loaded `.pt`/`.safetensors` dict; timm options the
        official layout cannot hold are refused (`vit_core.layouts.spec_from_timm`).
      num_heads: K, needed to split the fused (3D, D) qkv into (D, K, Dh) kernels.
      no_embed_class: a timm `no_embed_class=True` model.

    Returns:
      {"/"-joined key: array}, ready for `vit_core.npz.write_npz`.

    Raises:
      CheckpointError: a timm option without a counterpart, or a bad key or shape.
    """
    arrays = to_numpy(sd)
    spec = layouts.spec_from_timm(arrays, num_heads=num_heads, no_embed_class=no_embed_class)
    return layouts.timm_to_official(arrays, spec, no_embed_class=no_embed_class)


def check_variant(spec: ViTSpec, variant: str, *, heads_stored: bool = True) -> None:
    """Checks that a checkpoint's sizes are those of `variant`.

    Args:
      spec: read off the checkpoint.
      variant: a `vit_core.variants` name.
      heads_stored: False for a state dict, which does not store the head count (the
        spec's is then not compared, and the message says so).

    Raises:
      ConfigError: an unknown variant name.
      CheckpointError: the sizes differ; the message gives both sets of numbers.
    """
    if variant not in VARIANTS and variant not in HYBRIDS:
        known = ", ".join((*VARIANTS, *HYBRIDS))
        raise ConfigError(f"Unknown variant {variant!r} (--variant); known: {known}.")
    want = decode_variant(variant)
    names = ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")
    if spec.is_hybrid or want.resnet_layers is not None:  # a hybrid's ResNet must match too
        names += ("resnet_layers",)
    compared = [n for n in names if heads_stored or n != "num_heads"]
    if any(getattr(spec, n) != getattr(want, n) for n in compared):
        have = ", ".join(f"{n} {getattr(spec, n) if n in compared else 'not stored'}"
                         for n in names)
        need = ", ".join(f"{n} {getattr(want, n)}" for n in names)
        raise CheckpointError(f"The checkpoint is not a {variant}: it has {have}; "
                              f"{variant} has {need}.")


def load_npz(
    model: VisionTransformer, path: str | os.PathLike, *, resize: bool = False
) -> VisionTransformer:
    """Loads an official `.npz` (e.g. a released `ViT-B_16.npz`) into `model`, in place.

    Args:
      model: a `VisionTransformer` of the checkpoint's architecture.
      path: the `.npz` file.
      resize: resample the position embedding to the model's patch grid
        (`vit_core.posemb.resize_posemb`) when the file was made for another image size.

    Returns:
      The same model, for chaining.

    Raises:
      CheckpointError: unreadable file, or any key/shape that does not fit the model.
    """
    flat = read_npz(path)
    spec = model.spec
    want = tuple(model.pos_embed.shape) if model.pos_embed is not None else None
    have = tuple(np.shape(flat[POSEMB_KEY])) if POSEMB_KEY in flat else None
    # Only a grid change is resizable; a prefix mismatch is left to the key check below.
    file_prefix = int("cls" in flat) + (np.shape(flat["registers"])[1]
                                        if "registers" in flat else 0)
    if have is not None and want is not None and have != want and (
            file_prefix == spec.num_prefix_tokens):
        if not resize:
            raise CheckpointError(
                f"{path}: the position embedding has shape {have} but the model expects "
                f"{want} (a {spec.grid[0]}x{spec.grid[1]} patch grid). Pass resize=True to "
                "resample it (vit_core.posemb.resize_posemb)."
            )
        flat[POSEMB_KEY] = resize_posemb(flat[POSEMB_KEY], spec.grid, spec.num_prefix_tokens)
    # Every key and shape against the model's own table (a file of another model says which).
    check_keys(flat, official_shapes(spec), f"Checkpoint {path}")
    model.load_state_dict(to_torch(layouts.official_to_timm(flat, spec)), strict=True)
    return model


def save_npz(model: VisionTransformer, path: str | os.PathLike) -> None:
    """Saves `model` in the official `.npz` layout (atomic write).

    Args:
      model: the `VisionTransformer`.
      path: destination `.npz`.
    """
    arrays = to_numpy(model.state_dict())
    write_npz(path, layouts.timm_to_official(arrays, model.spec))


def hf_to_npz(sd: Mapping[str, torch.Tensor], spec: ViTSpec) -> dict[str, np.ndarray]:
    """A Hugging Face ViT state dict → official-layout arrays (see `vit_core.layouts`)."""
    return layouts.hf_to_official(to_numpy(sd), spec)


def npz_to_hf(flat: Mapping[str, np.ndarray], spec: ViTSpec | None = None
              ) -> dict[str, torch.Tensor]:
    """Official-layout arrays → a Hugging Face ViT state dict of tensors."""
    return to_torch(layouts.official_to_hf(flat, spec))


if __name__ == "__main__":
    import sys

    # The CLI is `python -m vit_torch` (vit_torch/__main__.py).
    print("error: the converter's command line is `python -m vit_torch IN OUT` "
          "(see `python -m vit_torch --help`).", file=sys.stderr)
    sys.exit(2)
