"""hf-hub: names, offline, from a Hugging Face cache filled in a temp dir (no network).

The cache is the layout huggingface_hub reads (`hub/models--ORG--NAME/refs/main` holding
a commit hash, `snapshots/COMMIT/FILE`); each test runs a fresh Python with HF_HOME
pointing there (huggingface_hub reads its environment once, at import).
"""

from __future__ import annotations

import json
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


FETCH = ("import sys; from vit_core.errors import run_cli; from vit_jax.weights import hub; "
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
    from vit_jax.weights import hub

    with pytest.raises(CheckpointError, match="is not a Hugging Face Hub name: expected "
                                              "hf-hub:ORG/REPO"):
        hub.parse_name(name)


def test_parse_name_with_revision():
    from vit_jax.weights import hub

    assert hub.parse_name("hf-hub:google/vit-base-patch16-224@main") == (
        "google/vit-base-patch16-224", "main")
    assert hub.parse_name("hf-hub:timm/vit_small_patch16_224.augreg_in21k_ft_in1k") == (
        "timm/vit_small_patch16_224.augreg_in21k_ft_in1k", None)


# ------------------------------------------------------------------ conversion to npz
RESOLVE = ("import json, sys; from vit_core.errors import run_cli; "
           "from vit_jax.weights import pretrained; "
           "print(json.dumps(run_cli(lambda: pretrained.resolve(sys.argv[1]))))")


def _testing_weights():
    import numpy as np

    from vit_core.params import official_shapes
    from vit_core.spec import ViTSpec

    spec = ViTSpec.from_variant("testing", num_classes=5, image_size=16)
    rng = np.random.default_rng(0)
    return spec, {k: rng.normal(size=shape).astype(np.float32)
                  for k, shape in official_shapes(spec).items()}


def _safetensors(sd) -> bytes:
    from safetensors.numpy import save

    return save(dict(sd))


def _resolve(name: str, hf_home: Path, cache: Path) -> tuple[str, dict]:
    result = run_python(RESOLVE.replace("sys.argv[1]", repr(name)), hf_home,
                        HF_HUB_OFFLINE="1", VIT_JAX_CACHE=str(cache))
    assert result.returncode == 0, result.stderr
    path, options = json.loads(result.stdout)
    return path, options


def _assert_same_arrays(got, want):
    import numpy as np

    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_a_timm_repo_converts_from_the_cache_with_its_config(tmp_path):
    from vit_core.files import read_official
    from vit_core.layouts import official_to_timm

    spec, flat = _testing_weights()
    config = {  # what timm's save_for_hf writes (architecture name, model_args, input size)
        "architecture": "vit_tiny_patch16_224", "num_classes": 5, "num_features": 32,
        "global_pool": "token",
        "model_args": {"img_size": [16, 16], "patch_size": 4, "embed_dim": 32, "depth": 2,
                       "num_heads": 4, "mlp_ratio": 2, "num_classes": 5},
        "pretrained_cfg": {"input_size": [3, 16, 16], "mean": [0.5] * 3, "std": [0.5] * 3}}
    fill_hub_cache(tmp_path / "hf", "timm/vit_testing", {
        "config.json": json.dumps(config).encode(),
        "model.safetensors": _safetensors(official_to_timm(flat, spec))})
    path, options = _resolve("hf-hub:timm/vit_testing", tmp_path / "hf", tmp_path / "cache")
    assert path == str(tmp_path / "cache" / "hf-hub" / "timm" / "vit_testing" / f"{COMMIT}.npz")
    # timm's ViTs compute the exact GELU: the options say so, the spec beside the file too.
    assert options == {"variant": "testing", "classifier": "token", "representation_size": None,
                       "gelu_approximate": False}
    got, got_spec = read_official(path)
    _assert_same_arrays(got, flat)  # bit-exact
    assert got_spec.replace(variant=spec.variant) == spec.replace(gelu_approximate=False)


def test_a_transformers_repo_converts_from_the_cache_with_its_config(tmp_path):
    from vit_core.files import read_official
    from vit_core.hf_config import make_config
    from vit_core.layouts import official_to_hf

    spec, flat = _testing_weights()
    spec = spec.replace(layer_norm_eps=1e-12, gelu_approximate=False)  # as HF's ViT configs
    config = make_config(spec, labels=["a", "b", "c", "d", "e"])
    fill_hub_cache(tmp_path / "hf", "google/vit-testing", {
        "config.json": json.dumps(config).encode(),
        "model.safetensors": _safetensors(official_to_hf(flat, spec))})
    path, options = _resolve("hf-hub:google/vit-testing", tmp_path / "hf", tmp_path / "cache")
    assert options == {"variant": "testing", "classifier": "token", "representation_size": None,
                       "layer_norm_eps": 1e-12, "gelu_approximate": False}
    got, got_spec = read_official(path)
    _assert_same_arrays(got, flat)
    assert got_spec.replace(variant=spec.variant) == spec
    # The second use reads the converted file: it works with the Hub's weights gone.
    snapshot = tmp_path / "hf" / "hub" / "models--google--vit-testing" / "snapshots" / COMMIT
    (snapshot / "model.safetensors").write_bytes(b"not safetensors any more")
    assert _resolve("hf-hub:google/vit-testing", tmp_path / "hf", tmp_path / "cache")[0] == path


@pytest.mark.parametrize("config, weights, message", [
    ({"model_type": "bert"}, None, "its config.json is neither transformers' ViT"),
    ({"architecture": "deit_tiny_patch16_224"}, None,
     "timm architecture 'deit_tiny_patch16_224' does not say its number of attention heads"),
    ({"model_type": "vit"}, b"\x00" * 16, "is not a readable safetensors file"),
    (None, None, "its config.json cannot be read"),
])
def test_repos_that_do_not_convert_are_one_line(tmp_path, config, weights, message):
    from vit_core.layouts import official_to_timm

    spec, flat = _testing_weights()
    fill_hub_cache(tmp_path / "hf", "someone/not-a-vit", {
        "config.json": b"{" if config is None else json.dumps(config).encode(),
        "model.safetensors": weights or _safetensors(official_to_timm(flat, spec))})
    result = run_python(RESOLVE.replace("sys.argv[1]", "'hf-hub:someone/not-a-vit'"),
                        tmp_path / "hf", HF_HUB_OFFLINE="1", VIT_JAX_CACHE=str(tmp_path / "c"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr


@pytest.mark.slow
def test_real_timm_and_transformers_repos_give_their_own_logits_in_vit_jax(tmp_path):
    """Repos written by timm's save_for_hf and transformers' save_pretrained (what the Hub
    holds), resolved offline, loaded in vit_jax: the same logits as the torch models."""
    import numpy as np

    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    transformers = pytest.importorskip("transformers")
    from vit_jax.weights import loading

    torch.manual_seed(0)
    timm_model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
        depth=2, num_heads=4, mlp_ratio=2, num_classes=5).eval()
    hf_model = transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, num_labels=5)).eval()
    with torch.no_grad():  # weights of order 1: the GELU form and the epsilon show
        for p in [*timm_model.parameters(), *hf_model.parameters()]:
            p.normal_(0.0, 0.5)
    timm.models.save_for_hf(timm_model, tmp_path / "timm_repo", safe_serialization=True)
    hf_model.save_pretrained(tmp_path / "hf_repo")  # safetensors
    images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())  # (B, 3, H, W)
    for repo, folder, model in (("timm/vit_real", "timm_repo", timm_model),
                                ("google/vit-real", "hf_repo", hf_model)):
        fill_hub_cache(tmp_path / "hf", repo, {
            name: (tmp_path / folder / name).read_bytes()
            for name in ("config.json", "model.safetensors")})
        path, _ = _resolve(f"hf-hub:{repo}", tmp_path / "hf", tmp_path / "cache")
        with torch.no_grad():
            out = model(nchw)
        want = (out.logits if hasattr(out, "logits") else out).numpy()  # (B, 5)
        got = loading.predict_logits(loading.load_model(path), images)  # (B, 5)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=repo)
        # The check can fail: the same weights with the tanh GELU are off by much more.
        tanh = loading.predict_logits(loading.load_model(path, gelu_approximate=True), images)
        assert np.abs(tanh - want).max() > 100 * np.abs(got - want).max(), repo


@pytest.mark.slow  # importing the trainer (TensorFlow) in a fresh process: 10-30 s here
def test_init_checkpoint_takes_an_hf_hub_name_and_its_model_options(tmp_path):
    from vit_core.hf_config import make_config
    from vit_core.layouts import official_to_hf

    spec, flat = _testing_weights()
    spec = spec.replace(layer_norm_eps=1e-12, gelu_approximate=False)
    fill_hub_cache(tmp_path / "hf", "google/vit-testing", {
        "config.json": json.dumps(make_config(spec)).encode(),
        "model.safetensors": _safetensors(official_to_hf(flat, spec))})
    code = ("from configs import digits; from vit_jax.training import trainer; "
            "c = digits.get_config(); "
            "c.model.variant = 'S/16'; c.init_checkpoint = 'hf-hub:google/vit-testing'; "
            "print(trainer.use_init_checkpoint_options(c)); "
            "print(c.model.variant, c.model.layer_norm_eps, c.model.gelu_approximate)")
    result = run_python(code, tmp_path / "hf", HF_HUB_OFFLINE="1",
                        VIT_JAX_CACHE=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[-2] == str(tmp_path / "cache" / "hf-hub" / "google" / "vit-testing" /
                          f"{COMMIT}.npz")
    assert out[-1] == "testing 1e-12 False"
    assert "init_checkpoint hf-hub:google/vit-testing: model.layer_norm_eps=1e-12 " \
           "(the config had 1e-06)" in result.stdout
