"""Hugging Face Hub repos by name: `hf-hub:ORG/REPO[@REVISION]` → an official `.npz`.

Two kinds of ViT repos hold the same weights in a torch layout:
  * timm's (`hf-hub:timm/vit_small_patch16_224.augreg_in21k_ft_in1k`): a timm state dict
    in `model.safetensors`, timm's `config.json` (architecture name, classes, input size);
  * transformers' (`hf-hub:google/vit-base-patch16-224`): a `ViTForImageClassification` /
    `ViTModel` state dict in `model.safetensors` and HF's `config.json`.

The files come through `huggingface_hub.hf_hub_download`: its cache (`$HF_HOME`,
`$HF_HUB_CACHE`), its resume and its offline mode (`HF_HUB_OFFLINE=1`; `VIT_JAX_OFFLINE=1`
means the same here), nothing re-written. Only `model.safetensors` is read (with
`safetensors.numpy`: never torch, never a pickled `pytorch_model.bin`). One thing is
added: before asking the Hub, one short TCP connect to its endpoint, because without
network `hf_hub_download` retries for ~25 s with a warning per try; unreachable, the
local cache is used if it holds the files, else one `DownloadError` line says what to do.

`resolve` converts the weights with `vit_core`'s numpy converters (`hf_to_official`,
`timm_to_official`; the spec from the file's own config: sizes, image size, heads,
LayerNorm epsilon, GELU form) into `$VIT_JAX_CACHE/hf-hub/ORG/REPO/COMMIT.npz` with its
`COMMIT.spec.json` beside it (`vit_core.files`), once per snapshot.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

from vit_core.errors import CheckpointError, DownloadError
from vit_core.files import read_spec, write_official
from vit_core.hf_config import labels_of, spec_from_hf
from vit_core.layouts import hf_to_official, spec_from_timm, timm_to_official
from vit_core.spec import ViTSpec
from vit_core.variants import WIDTHS
from vit_jax.weights import download

PREFIX = "hf-hub:"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PROBE_TIMEOUT_S = 5.0


def is_hub_name(name: str) -> bool:
    """Whether `name` is an `hf-hub:` name."""
    return name.startswith(PREFIX)


def parse_name(name: str) -> tuple[str, str | None]:
    """"hf-hub:ORG/REPO[@REVISION]" → (repo id, revision or None).

    Raises:
      CheckpointError: not of that form.
    """
    repo, _, revision = name.removeprefix(PREFIX).partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise CheckpointError(f"{name} is not a Hugging Face Hub name: expected "
                              "hf-hub:ORG/REPO (e.g. hf-hub:google/vit-base-patch16-224).")
    return repo, revision or None


def _hub_offline() -> bool:
    from huggingface_hub import constants

    # HF reads HF_HUB_OFFLINE once at import; a later setting in this process counts too.
    later = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return download.is_offline() or bool(constants.HF_HUB_OFFLINE) or later


def _endpoint_unreachable() -> str | None:
    """Why the Hub's endpoint cannot be reached (one quick connect), or None."""
    from huggingface_hub import constants

    url = urllib.parse.urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as e:
        return f"{constants.ENDPOINT}: {e}"


def fetch(name: str) -> tuple[str, str, str]:
    """The local `config.json` and `model.safetensors` of a Hub repo, fetched if needed.

    Args:
      name: "hf-hub:ORG/REPO" or "hf-hub:ORG/REPO@REVISION".

    Returns:
      (config path, weights path, commit hash of the snapshot they come from).

    Raises:
      CheckpointError: a malformed name, or a repo without `model.safetensors`.
      DownloadError: offline (or no network) and not in the Hugging Face cache, or an
        unknown repo; one line.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, revision = parse_name(name)
    offline = _hub_offline()
    unreachable = None if offline else _endpoint_unreachable()
    paths = []
    for filename in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            paths.append(hf_hub_download(repo, filename, revision=revision,
                                         local_files_only=offline or unreachable is not None))
        except LocalEntryNotFoundError:
            why = (f"the Hub cannot be reached ({unreachable})" if unreachable else
                   "offline (VIT_JAX_OFFLINE or HF_HUB_OFFLINE is set)")
            raise DownloadError(
                f"{name}: {filename} is not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
                f" and {why}: run once with network (or HF_ENDPOINT set to a mirror), or "
                f"copy that cache from a machine that has it.") from None
        except RepositoryNotFoundError:
            raise DownloadError(f"{name}: no such repository on {constants.ENDPOINT} (or it "
                                "is private: log in with `hf auth login`).") from None
        except RevisionNotFoundError:
            raise DownloadError(f"{name}: {repo} has no revision {revision!r}.") from None
        except EntryNotFoundError:
            raise CheckpointError(
                f"{name} has no {filename}; only repos with safetensors weights and a "
                "config.json load here (timm's timm/vit_* and transformers' ViT repos).") from None
        except HfHubHTTPError as e:
            raise DownloadError(f"{name}: the Hub answered {e}".splitlines()[0]) from None
    config_path, weights_path = paths
    commit = os.path.basename(os.path.dirname(weights_path))
    return config_path, weights_path, commit


# ------------------------------------------------------------------ conversion to npz
_TIMM_FAMILIES = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H"}
_TIMM_ARCH = re.compile(r"^vit_(tiny|small|base|large|huge)_patch\d+")


def _timm_num_heads(config: Mapping[str, Any], name: str) -> int:
    """K for a timm ViT: its `model_args`, else the family in its architecture name."""
    heads = (config.get("model_args") or {}).get("num_heads")
    if isinstance(heads, int) and heads > 0:
        return heads
    match = _TIMM_ARCH.match(str(config.get("architecture", "")))
    if not match:
        raise CheckpointError(
            f"{name}: timm architecture {config.get('architecture')!r} does not say its number "
            "of attention heads (only vit_{tiny,small,base,large,huge}_patch* do by name).")
    return WIDTHS[_TIMM_FAMILIES[match.group(1)]].num_heads


def _timm_image_size(config: Mapping[str, Any]) -> tuple[int, int] | None:
    size = (config.get("pretrained_cfg") or {}).get("input_size")
    if isinstance(size, list | tuple) and len(size) == 3 and all(
            isinstance(s, int) and 0 < s <= 1 << 16 for s in size):
        return (size[1], size[2])
    return None


def convert(name: str, config_path: str, weights_path: str) -> tuple[dict[str, Any], ViTSpec]:
    """A Hub repo's files → official-layout arrays and their spec (numpy only).

    Args:
      name: the hf-hub name (for messages).
      config_path: its `config.json` (timm's or transformers').
      weights_path: its `model.safetensors`.

    Returns:
      (flat official arrays, spec): the spec read off the weights and the config (image
      size, LayerNorm epsilon, GELU form).

    Raises:
      CheckpointError: a config that is not JSON or not a ViT's, or weights the official
        layout cannot hold (named by the converter).
    """
    config = _read_config(config_path, name)
    sd = read_safetensors(weights_path)
    if config.get("model_type") == "vit":  # transformers' ViTModel / ViTForImageClassification
        spec = spec_from_hf(config, sd)
        return hf_to_official(sd, spec), spec
    if "architecture" in config:  # timm's config.json
        no_embed_class = bool((config.get("model_args") or {}).get("no_embed_class", False))
        spec = spec_from_timm(sd, num_heads=_timm_num_heads(config, name),
                              no_embed_class=no_embed_class, image_size=_timm_image_size(config))
        return timm_to_official(sd, spec, no_embed_class=no_embed_class), spec
    raise CheckpointError(
        f"{name}: its config.json is neither transformers' ViT (model_type 'vit') nor timm's "
        "(an 'architecture' field).")


def _read_config(path: str, name: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            config = json.loads(f.read(1 << 20))  # a model's config.json is a few KB
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{name}: its config.json cannot be read: {e}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{name}: its config.json is not a JSON object.")
    return config


def is_model_dir(path: str) -> bool:
    """Whether `path` is a HF or timm model directory (its config.json says so).

    A vit_jax workdir also has a config.json, but a run config's: no `model_type` (HF) or
    `architecture` (timm) field.
    """
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        return False
    try:
        config = _read_config(config_path, path)
    except CheckpointError:
        return False
    return "model_type" in config or "architecture" in config


def read_model_dir(path: str) -> tuple[dict[str, Any], ViTSpec, list[str] | None]:
    """A HF / timm model directory → (official arrays, spec, class names or None).

    Raises:
      CheckpointError: no `model.safetensors` beside the config (a `pytorch_model.bin` is
        a pickle: `python -m vit_torch` converts it), or what `convert` refuses.
    """
    weights = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        raise CheckpointError(
            f"{path} is a model directory without {WEIGHTS_FILE}; a pytorch_model.bin is "
            f"converted by `python -m vit_torch {path} OUT.npz` (it is a pickle: vit_jax "
            "does not read it).")
    flat, spec = convert(path, os.path.join(path, CONFIG_FILE), weights)
    config = _read_config(os.path.join(path, CONFIG_FILE), path)
    return flat, spec, labels_of(config) if config.get("model_type") == "vit" else None


def resolve(name: str) -> tuple[str, ViTSpec]:
    """An hf-hub name → the converted official `.npz` (with its spec beside it) and the spec.

    The conversion is kept in the vit_jax cache under the snapshot's commit
    (`$VIT_JAX_CACHE/hf-hub/ORG/REPO/COMMIT.npz`), so it runs once per revision.

    Args:
      name: "hf-hub:ORG/REPO[@REVISION]".

    Returns:
      (path of the `.npz`, its spec).

    Raises:
      CheckpointError / DownloadError: as `fetch` and `convert` say.
    """
    repo, _ = parse_name(name)
    config_path, weights_path, commit = fetch(name)
    out = os.path.join(download.cache_dir(), "hf-hub", *repo.split("/"), f"{commit}.npz")
    spec = read_spec(out) if os.path.isfile(out) else None
    if spec is None:
        flat, spec = convert(name, config_path, weights_path)
        write_official(out, flat, spec)  # atomic: concurrent runs at worst convert twice
    return out, spec


def read_safetensors(path: str) -> dict[str, Any]:
    """A `.safetensors` file's tensors as numpy arrays (`safetensors.numpy`: no torch).

    Raises:
      CheckpointError: not a readable safetensors file, or a dtype numpy lacks (bfloat16).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
