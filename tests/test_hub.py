"""hf-hub: names, offline, from a Hugging Face cache filled in a temp dir (no network).

The cache is the layout huggingface_hub reads (`hub/models--ORG--NAME/refs/main` holding
a commit hash, `snapshots/COMMIT/FILE`); each test runs a fresh Python with HF_HOME
pointing there (huggingface_hub reads its environment once, at import).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_hub_cache(hf_home: Path, repo: str, files: dict[str, bytes]) -> Path:
    """Writes `files` as the main revision of `repo` in a Hugging Face cache under hf_home."""
    model_dir = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    (model_dir / "refs").mkdir(parents=True)
    (model_dir / "refs" / "main").write_text(COMMIT)
    snapshot = model_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


def run_python(code: str, hf_home: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(hf_home), **env}
    for key in ("HF_HUB_OFFLINE", "VIT_JAX_OFFLINE", "HF_ENDPOINT", "HF_HUB_CACHE"):
        if key not in env:
            full_env.pop(key, None)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                          text=True, timeout=60)


FETCH = ("import sys; from vit_core.errors import run_cli; from vit_jax import hub; "
         "print(*run_cli(lambda: hub.fetch(sys.argv[1])), sep='\\n')")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_offline_from_a_filled_cache(tmp_path):
    snapshot = fill_hub_cache(tmp_path, "google/vit-tiny-test",
                              {"config.json": b"{}", "model.safetensors": b"weights"})
    for env in ({"HF_HUB_OFFLINE": "1"}, {"VIT_JAX_OFFLINE": "1"}):
        result = run_python(FETCH.replace("sys.argv[1]", "'hf-hub:google/vit-tiny-test'"),
                            tmp_path, **env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            str(snapshot / "config.json"), str(snapshot / "model.safetensors"), COMMIT]


def test_offline_and_not_cached_is_one_line(tmp_path):
    result = run_python(FETCH.replace("sys.argv[1]", "'hf-hub:google/vit-absent'"), tmp_path,
                        HF_HUB_OFFLINE="1")
    assert result.returncode == 2
    assert result.stderr == (
        f"error: hf-hub:google/vit-absent: config.json is not in the Hugging Face cache "
        f"({tmp_path / 'hub'}) and offline (VIT_JAX_OFFLINE or HF_HUB_OFFLINE is set): run once "
        "with network (or HF_ENDPOINT set to a mirror), or copy that cache from a machine "
        "that has it.\n")


def test_no_network_uses_the_cache_or_says_so_in_one_line_at_once(tmp_path):
    port = _closed_port()
    endpoint = f"http://127.0.0.1:{port}"
    snapshot = fill_hub_cache(tmp_path, "timm/vit_tiny_test",
                              {"config.json": b"{}", "model.safetensors": b"weights"})
    result = run_python(FETCH.replace("sys.argv[1]", "'hf-hub:timm/vit_tiny_test'"), tmp_path,
                        HF_ENDPOINT=endpoint)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == str(snapshot / "model.safetensors")
    start = time.monotonic()
    result = run_python(FETCH.replace("sys.argv[1]", "'hf-hub:timm/vit_absent'"), tmp_path,
                        HF_ENDPOINT=endpoint)
    assert time.monotonic() - start < 15  # huggingface_hub alone retries for ~25 s
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Retry" not in result.stderr
    assert result.stderr.startswith(
        f"error: hf-hub:timm/vit_absent: config.json is not in the Hugging Face cache "
        f"({tmp_path / 'hub'}) and the Hub cannot be reached ({endpoint}: [Errno 111] "
        "Connection refused): run once with network")


@pytest.mark.parametrize("name", ["hf-hub:vit-base", "hf-hub:a/b/c", "hf-hub:/x", "hf-hub:../x"])
def test_malformed_names(name):
    from vit_core.errors import CheckpointError
    from vit_jax import hub

    with pytest.raises(CheckpointError, match="is not a Hugging Face Hub name: expected "
                                              "hf-hub:ORG/REPO"):
        hub.parse_name(name)


def test_parse_name_with_revision():
    from vit_jax import hub

    assert hub.parse_name("hf-hub:google/vit-base-patch16-224@main") == (
        "google/vit-base-patch16-224", "main")
    assert hub.parse_name("hf-hub:timm/vit_small_patch16_224.augreg_in21k_ft_in1k") == (
        "timm/vit_small_patch16_224.augreg_in21k_ft_in1k", None)
