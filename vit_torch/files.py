"""Checkpoint files of every kind the converter reads and writes, and `convert_file`.

Kinds, told apart by the path: `.npz` (the official layout, the interchange format),
`.pt`/`.pth`/`.safetensors` (timm-named state dicts: vit_torch's or timm's), and a
Hugging Face checkpoint directory (`config.json` + `model.safetensors`; any path without
an extension, or an existing directory). Every conversion goes through the npz arrays.

Nothing pickled is ever executed: `.pt` files are read with `torch.load(weights_only=True)`,
`.npz` with `vit_core.npz.read_npz`. Every input is untrusted: safetensors' reader checks
its header and offsets against the file, torch's its storages' sizes, read_npz every
member's shape and the zip's expansion, `read_json` a HF directory's JSON files (size,
syntax, an object); a broken or hostile file is one `CheckpointError`. Files are written
atomically with the usual permissions.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from vit_core import hf_config, layouts
from vit_core.errors import CheckpointError, ConfigError
from vit_core.files import read_official, write_official, write_spec
from vit_core.npz import atomic_write
from vit_core.spec import DEFAULT_LAYER_NORM_EPS, ViTSpec
from vit_core.variants import decode_variant
from vit_torch.convert import check_variant, to_numpy, to_torch

NPZ, TORCH, HF = "npz", "state dict", "Hugging Face directory"
TORCH_EXTS = (".pt", ".pth", ".safetensors")
HF_WEIGHTS = "model.safetensors"
MAX_JSON_BYTES = 16 << 20  # a HF config.json is a few kB, a shard index well under 1 MB


def path_kind(path: str | os.PathLike) -> str:
    """NPZ, TORCH or HF for a path (see the module docstring).

    Raises:
      ConfigError: an extension that is none of those.
    """
    path = os.fspath(path)
    ext = os.path.splitext(os.path.basename(path.rstrip("/\\")))[1].lower()
    if os.path.isdir(path) or path.endswith(("/", os.sep)) or not ext:
        return HF
    if ext == ".npz":
        return NPZ
    if ext in TORCH_EXTS:
        return TORCH
    raise ConfigError(f"Cannot tell the format of {path}: use .npz, {', '.join(TORCH_EXTS)}, "
                      "or a directory (no extension) for a Hugging Face checkpoint.")


def _shapes(arrays: Mapping[str, object]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(np.shape(v)) for k, v in arrays.items()}


# ------------------------------------------------------------------- torch state dicts
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a flat {name: tensor} dict from `.pt`/`.pth` or `.safetensors`, never unpickling.

    Raises:
      CheckpointError: missing, unreadable, holding pickled objects, or not flat tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        try:
            return load_file(path)
        except SafetensorError as e:
            raise CheckpointError(f"{path} is not a readable .safetensors file: {e}") from None
    try:
        # weights_only: the restricted unpickler; custom objects are refused, never run.
        # Its warnings (e.g. about a foreign pickle protocol) would add lines to the error.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
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


def write_state_dict(path: str | os.PathLike, sd: Mapping[str, torch.Tensor]) -> None:
    """Writes a state dict as `.safetensors` or (any other extension) `torch.save`."""
    if os.fspath(path).endswith(".safetensors"):
        data = save(dict(sd))
        atomic_write(path, lambda f: f.write(data))
    else:
        atomic_write(path, lambda f: torch.save(dict(sd), f))


# ------------------------------------------------------------- Hugging Face directories
def read_hf(directory: str | os.PathLike
            ) -> tuple[dict[str, np.ndarray], ViTSpec, list[str] | None]:
    """Reads a HF `ViTModel`/`ViTForImageClassification` directory as npz arrays.

    Args:
      directory: holds `config.json` and `model.safetensors` (or its shards, or a
        `pytorch_model.bin`), as `save_pretrained` writes them.

    Returns:
      (arrays in the official layout, their spec, the class names or None).

    Raises:
      CheckpointError: missing or unreadable files, a config that is not a ViT or does not
        fit the weights, or weights that do not fit the key map.
    """
    directory = os.fspath(directory)
    config_path = os.path.join(directory, "config.json")
    if os.path.isdir(os.path.join(directory, "checkpoints")) and not os.path.isfile(
            os.path.join(directory, HF_WEIGHTS)):
        raise CheckpointError(f"{directory} is a vit_jax training workdir, not a Hugging Face "
                              f"checkpoint: `python -m vit_jax.export {directory} OUT` writes "
                              "it as .npz, timm .safetensors or a Hugging Face directory.")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{directory} is not a Hugging Face checkpoint: no config.json.")
    config = read_json(config_path)
    sd = to_numpy(_read_hf_weights(directory))
    spec = hf_config.spec_from_hf(config, sd)
    return layouts.hf_to_official(sd, spec), spec, hf_config.labels_of(config)


def read_json(path: str) -> dict[str, Any]:
    """Reads a JSON object from a file of a HF directory (untrusted: size and type checked).

    Raises:
      CheckpointError: larger than MAX_JSON_BYTES, not UTF-8 JSON, or not a JSON object.
    """
    size = os.path.getsize(path)
    if size > MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is {size} bytes, not a Hugging Face JSON file (those "
                              f"are under {MAX_JSON_BYTES >> 20} MiB).")
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} holds a JSON {type(value).__name__}, not an object.")
    return value


def _read_hf_weights(directory: str) -> dict[str, torch.Tensor]:
    index = os.path.join(directory, HF_WEIGHTS + ".index.json")
    if os.path.isfile(os.path.join(directory, HF_WEIGHTS)):
        return read_state_dict(os.path.join(directory, HF_WEIGHTS))
    if os.path.isfile(index):  # sharded: {"weight_map": {key: shard file}}
        weight_map = read_json(index).get("weight_map")
        shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        # Shard names are file names in `directory`: never a path elsewhere.
        if not shards or not all(isinstance(s, str) and s == os.path.basename(s)
                                 and s not in (".", "..") for s in shards):
            raise CheckpointError(f"{index} has no usable weight_map (shard file names in "
                                  f"{directory}).")
        parts = [read_state_dict(os.path.join(directory, shard)) for shard in shards]
        return {k: v for part in parts for k, v in part.items()}
    if os.path.isfile(os.path.join(directory, "pytorch_model.bin")):
        return read_state_dict(os.path.join(directory, "pytorch_model.bin"))
    raise CheckpointError(f"{directory} has a config.json but no {HF_WEIGHTS}.")


def write_hf(directory: str | os.PathLike, flat: Mapping[str, np.ndarray], spec: ViTSpec, *,
             labels: Sequence[str] | None = None) -> None:
    """Writes npz arrays as a HF checkpoint directory (`config.json`, `model.safetensors`).

    Args:
      directory: created if missing; files in it are replaced.
      flat: arrays in the official layout.
      spec: their spec (GELU form and LayerNorm epsilon go into the config).
      labels: class names for `id2label`, or None.

    Raises:
      CheckpointError: a model HF cannot hold (before anything is written).
    """
    config = hf_config.make_config(spec, labels=labels)
    data = save(to_torch(layouts.official_to_hf(flat, spec)), metadata={"format": "pt"})
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write(os.path.join(directory, HF_WEIGHTS), lambda f: f.write(data))
    atomic_write(os.path.join(directory, "config.json"), lambda f: f.write(text.encode()))


# --------------------------------------------------------------------------- convert
def _read_labels(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise ConfigError(f"Labels file not found: {path} (one class name per line).")
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def convert_file(
    src: str | os.PathLike, dst: str | os.PathLike, *, variant: str | None = None,
    gelu_approximate: bool | None = None, labels_path: str | None = None,
    no_embed_class: bool = False,
) -> list[str]:
    """Converts a checkpoint between any two kinds of `path_kind`, through the npz layout.

    What the npz cannot store (the LayerNorm epsilon, the GELU form) travels in the spec
    file written beside an `.npz` or `.pt`/`.safetensors` destination (`vit_core.files`)
    and in a HF destination's config.json. Everything is checked before anything is
    written: a model the destination cannot hold is refused with one line.

    Args:
      src, dst: paths; their kinds give the direction.
      variant: the head count of a state dict (which does not store it; required then);
        for the other kinds, a check of the checkpoint's sizes.
      gelu_approximate: the activation (default: the source's: a HF config's, a spec
        file's, else tanh as the official weights; timm's exact GELU must be said).
      labels_path: class names, one per line: read for a HF destination's `id2label`,
        written from a HF source's.
      no_embed_class: a timm state dict of a `no_embed_class=True` model.

    Returns:
      Notes for the user.

    Raises:
      UserError kinds: anything about the files or options the user can fix.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    src_kind, dst_kind = path_kind(src), path_kind(dst)
    if src_kind == dst_kind and src_kind != TORCH:
        raise ConfigError(f"{src} and {dst} are both a {src_kind}; nothing to convert.")
    if HF not in (src_kind, dst_kind) and labels_path is not None:
        raise ConfigError("--labels goes with a Hugging Face checkpoint on one side "
                          "(the other formats do not store class names).")
    if no_embed_class and src_kind != TORCH:
        raise ConfigError("--no-embed-class is about a timm state dict; the source is not one.")
    notes: list[str] = []
    labels = None
    if src_kind == NPZ:
        flat, spec = read_official(src)
    elif src_kind == TORCH:
        if variant is None:
            raise ConfigError("Reading a state dict needs --variant (e.g. B/16) for the head "
                              "count, which a state dict does not store.")
        arrays = to_numpy(read_state_dict(src))
        # The sizes first (with a head count that fits any width), then the variant's heads.
        spec = layouts.spec_from_timm(arrays, num_heads=1, no_embed_class=no_embed_class,
                                      gelu_approximate=gelu_approximate is not False)
        check_variant(spec, variant, heads_stored=False)
        spec = spec.replace(num_heads=decode_variant(variant).num_heads)
        flat = layouts.timm_to_official(arrays, spec, no_embed_class=no_embed_class)
    else:
        flat, spec, labels = read_hf(src)
        if gelu_approximate is not None and gelu_approximate != spec.gelu_approximate:
            raise ConfigError(f"--gelu disagrees with {src}/config.json's hidden_act.")
    if gelu_approximate is not None:
        spec = spec.replace(gelu_approximate=gelu_approximate)
    if variant is not None and src_kind != TORCH:
        check_variant(spec, variant)
    if not spec.gelu_approximate:
        notes.append("the model uses the exact (erf) GELU (gelu_approximate=False, kept in "
                     "the spec written beside it).")
    if spec.layer_norm_eps != DEFAULT_LAYER_NORM_EPS:
        notes.append(f"the model's layer_norm_eps is {spec.layer_norm_eps:g} (kept in the spec "
                     "written beside it).")

    if dst_kind == NPZ:
        write_official(dst, flat, spec)
    elif dst_kind == TORCH:
        write_state_dict(dst, to_torch(layouts.official_to_timm(flat, spec)))
        write_spec(dst, spec)
    else:
        if labels_path is not None:
            labels = _read_labels(labels_path)
        write_hf(dst, flat, spec, labels=labels)
        if not spec.num_classes and spec.representation_size is None:
            notes.append("no head and no pre-logits layer: load it with "
                         "ViTModel.from_pretrained(DIR, add_pooling_layer=False).")
    if src_kind == HF and labels_path is not None:
        if labels is None:
            notes.append(f"{src} has no class names (only LABEL_i); {labels_path} not written.")
        else:
            text = "".join(f"{name}\n" for name in labels)
            atomic_write(labels_path, lambda f: f.write(text.encode()))
    return notes
