"""Hugging Face Hub repos by name: `hf-hub:ORG/REPO[@REVISION]` → local files.

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
"""

from __future__ import annotations

import os
import socket
import urllib.parse

from vit_core.errors import CheckpointError, DownloadError
from vit_jax import download

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
