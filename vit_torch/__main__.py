"""The converter CLI: `python -m vit_torch.convert IN OUT [--variant B/16]`.

(`python -m vit_torch ...` is the same.) Converts ViT weights between the official `.npz`
layout and `.pt`/`.pth`/`.safetensors` state dicts through the key map of
`vit_torch.convert`. Nothing pickled is ever executed: `.pt` files are read with
`torch.load(weights_only=True)`, `.npz` files with `allow_pickle=False`. Bad input prints
one error message to stderr and exits with code 2, without a stack trace.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile

import torch

from vit_jax.checkpoint import CheckpointError, read_npz, write_npz
from vit_jax.variants import decode_variant
from vit_torch.convert import Dims, npz_dims, npz_to_state_dict, state_dict_to_npz, torch_dims

_TORCH_EXTS = (".pt", ".pth", ".safetensors")


def _read_torch(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:  # safetensors raises its own (Rust) error type
            raise CheckpointError(f"{path} is not a readable .safetensors file: {e}") from None
    try:
        # weights_only: the restricted unpickler; custom objects are refused, never run.
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a plain tensor state dict (it holds pickled objects or is "
            f"corrupt); refusing to load it. Details: {str(e).splitlines()[0]}"
        ) from None
    if not isinstance(sd, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()
    ):
        raise CheckpointError(f"{path} does not hold a flat {{name: tensor}} state dict.")
    return sd


def _write_torch(path: str, sd: dict[str, torch.Tensor]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    try:  # temp file + rename: never a half-written file under the final name
        if path.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(sd, tmp)
        else:
            torch.save(sd, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise


def _check_variant(dims: Dims, variant: str) -> None:
    spec = decode_variant(variant)
    want = (spec.patch_size, spec.hidden_size, spec.num_layers, spec.num_heads, spec.mlp_dim)
    got = (dims.patch, dims.width, dims.layers, dims.heads, dims.mlp)
    if got != want:
        raise CheckpointError(
            f"The checkpoint is not a {variant}: (patch, width, layers, heads, mlp) = {got}, "
            f"the variant has {want}."
        )


def convert(src: str, dst: str, variant: str | None = None) -> None:
    """Converts a checkpoint file between `.npz` and `.pt`/`.pth`/`.safetensors`.

    Args:
      src, dst: paths; the direction is chosen by their extensions.
      variant: checks the checkpoint is this variant; required for torch → npz (the
        head count is not stored in a state dict).
    """
    if src.endswith(".npz") and dst.endswith(_TORCH_EXTS):
        flat = read_npz(src)
        sd = npz_to_state_dict(flat)
        if variant is not None:
            _check_variant(npz_dims({k: v.shape for k, v in flat.items()}), variant)
        _write_torch(dst, sd)
    elif src.endswith(_TORCH_EXTS) and dst.endswith(".npz"):
        if variant is None:
            raise CheckpointError("Converting to .npz needs --variant (e.g. B/16) for the head "
                                  "count, which a state dict does not store.")
        sd = _read_torch(src)
        num_heads = decode_variant(variant).num_heads
        _check_variant(torch_dims({k: tuple(v.shape) for k, v in sd.items()}, num_heads), variant)
        write_npz(dst, state_dict_to_npz(sd, num_heads=num_heads))
    else:
        raise CheckpointError(
            f"Cannot convert {src} → {dst}: one side must be .npz and the other "
            f"{'/'.join(_TORCH_EXTS)}."
        )


def main(argv: list[str] | None = None) -> int:
    """The CLI entry point; returns the exit code (2 with a message on any bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m vit_torch.convert",
        description="Convert ViT weights between the official .npz layout\n"
        "(google-research/vision_transformer, vit_jax) and vit_torch/timm-style state dicts\n"
        "(.pt/.pth via torch.save, or .safetensors). The direction follows the extensions.\n"
        "Nothing pickled is ever executed: .pt is read with torch.load(weights_only=True),\n"
        ".npz with allow_pickle=False.",
        epilog="examples:\n"
        "  python -m vit_torch.convert ViT-B_16.npz vit_b16.safetensors\n"
        "  python -m vit_torch.convert vit_b16.pt ViT-B_16.npz --variant B/16\n"
        "Bad input prints one error message (no stack trace) and exits with code 2.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="input file: .npz, .pt, .pth or .safetensors")
    parser.add_argument("dst", help="output file, of the other kind")
    parser.add_argument(
        "--variant", help="model variant, e.g. B/16; required when writing .npz (gives the "
        "head count), otherwise checks the checkpoint's sizes",
    )
    args = parser.parse_args(argv)
    try:
        convert(args.src, args.dst, args.variant)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
