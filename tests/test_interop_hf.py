"""Hugging Face transformers ⇄ the official npz ⇄ vit_jax, against the real transformers.

Random weights (every parameter, biases and norms too) in small models of two sizes; the
logits must agree within the float32 forward bound of the parity suite (LOGITS_REL).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import ViTConfig, ViTForImageClassification, ViTModel  # noqa: E402

from parity.harness import LOGITS_REL, assert_rel_close  # noqa: E402
from vit_core import npz  # noqa: E402
from vit_core.errors import CheckpointError, ConfigError  # noqa: E402
from vit_core.files import read_official  # noqa: E402
from vit_jax.model import vit as models  # noqa: E402
from vit_jax.weights import checkpoint  # noqa: E402
from vit_torch import convert, files  # noqa: E402
from vit_torch import model as torch_vit  # noqa: E402
from vit_torch.model import create_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMG = 32
# Two small sizes: (hidden size, heads, MLP, patch); 2 layers each.
SIZES = {
    "d32-k4-p4": dict(hidden_size=32, num_heads=4, mlp_dim=64, patch_size=4),
    "d48-k3-p8": dict(hidden_size=48, num_heads=3, mlp_dim=96, patch_size=8),
}


def _hf_config(size: str, *, tanh: bool, num_labels: int = 5, **kw) -> ViTConfig:
    s = SIZES[size]
    return ViTConfig(hidden_size=s["hidden_size"], num_attention_heads=s["num_heads"],
                     intermediate_size=s["mlp_dim"], patch_size=s["patch_size"],
                     num_hidden_layers=2, image_size=IMG, layer_norm_eps=1e-6,
                     hidden_act="gelu_pytorch_tanh" if tanh else "gelu", num_labels=num_labels,
                     **kw)


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """HF initialises biases to 0 and norms to 1: noise on every parameter proves more."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def _images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, IMG, IMG, 3)).astype(np.float32)


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _flax(size: str, *, tanh: bool, num_classes: int = 5, rep: int | None = None
          ) -> models.VisionTransformer:
    return models.create_model("testing", num_classes=num_classes, gelu_approximate=tanh,
                               representation_size=rep, **SIZES[size])


def _flax_params(model: models.VisionTransformer) -> dict:
    """Random values in the model's parameter tree (its shapes from `jax.eval_shape`: no
    initialiser is compiled, seconds less on a busy CPU)."""
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(np.float32),
                        models.param_shapes(model, IMG))


def _flax_from_npz(model: models.VisionTransformer, path: Path, images: np.ndarray) -> np.ndarray:
    params = checkpoint.load_npz(path)
    checkpoint.check_params(params, models.param_shapes(model, IMG))
    return _apply(model, params, images)


def _apply(model: models.VisionTransformer, params: dict, images: np.ndarray) -> np.ndarray:
    return np.asarray(jax.jit(model.apply)({"params": params}, images))


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert np.max(np.abs(want)) > 0.3  # random weights: logits of order one, not zeros
    assert_rel_close({"logits": got}, {"logits": want}, LOGITS_REL)


@pytest.mark.parametrize("size,tanh", [("d32-k4-p4", True), ("d48-k3-p8", False)])
def test_hf_classifier_to_vit_jax(tmp_path, size, tanh):
    hf = _randomised(ViTForImageClassification(_hf_config(size, tanh=tanh)))
    hf.save_pretrained(tmp_path / "hf")
    images = _images()
    with torch.no_grad():
        want = hf(_nchw(images)).logits.numpy()
    notes = files.convert_file(tmp_path / "hf", tmp_path / "m.npz")
    assert any("exact (erf) GELU" in n for n in notes) == (not tanh)
    got = _flax_from_npz(_flax(size, tanh=tanh), tmp_path / "m.npz", images)
    _close(got, want)


@pytest.mark.parametrize("size,tanh", [("d32-k4-p4", False), ("d48-k3-p8", True)])
def test_vit_jax_to_hf_classifier(tmp_path, size, tanh):
    model = _flax(size, tanh=tanh)
    params = _flax_params(model)
    checkpoint.save_npz(tmp_path / "m.npz", params)
    (tmp_path / "labels.txt").write_text("".join(f"class {i}\n" for i in range(5)))
    files.convert_file(tmp_path / "m.npz", tmp_path / "hf", gelu_approximate=tanh,
                       labels_path=str(tmp_path / "labels.txt"))
    hf, info = ViTForImageClassification.from_pretrained(tmp_path / "hf",
                                                         output_loading_info=True)
    assert not any(info.values()), info  # every key used, none missing or new
    c = hf.config
    assert (c.layer_norm_eps, c.qkv_bias, c.image_size, c.num_channels) == (1e-6, True, IMG, 3)
    assert c.hidden_act == ("gelu_pytorch_tanh" if tanh else "gelu")
    assert (c.hidden_size, c.num_attention_heads, c.intermediate_size, c.patch_size) == (
        SIZES[size]["hidden_size"], SIZES[size]["num_heads"], SIZES[size]["mlp_dim"],
        SIZES[size]["patch_size"])
    assert c.num_hidden_layers == 2 and c.num_labels == 5 and c.id2label[3] == "class 3"
    assert c.label2id["class 3"] == 3
    images = _images(1)
    want = _apply(model, params, images)
    with torch.no_grad():
        got = hf.eval()(_nchw(images)).logits.numpy()
    _close(got, want)


def test_gelu_kind_matters(tmp_path):
    """The exact-vs-tanh checks above would prove nothing if both gave the same logits."""
    hf = _randomised(ViTForImageClassification(_hf_config("d32-k4-p4", tanh=False)))
    hf.save_pretrained(tmp_path / "hf")
    files.convert_file(tmp_path / "hf", tmp_path / "m.npz")
    images = _images()
    exact = _flax_from_npz(_flax("d32-k4-p4", tanh=False), tmp_path / "m.npz", images)
    tanh = _flax_from_npz(_flax("d32-k4-p4", tanh=True), tmp_path / "m.npz", images)
    assert np.max(np.abs(tanh - exact)) / np.max(np.abs(exact)) > 10 * LOGITS_REL


def test_vit_model_pooler_is_pre_logits_both_ways(tmp_path):
    """HF ViTModel's pooler (dense + tanh on the class token) ⇄ the official pre_logits."""
    hf = _randomised(ViTModel(_hf_config("d48-k3-p8", tanh=True, pooler_output_size=24)))
    hf.save_pretrained(tmp_path / "hf")
    images = _images()
    with torch.no_grad():
        want = hf(_nchw(images)).pooler_output.numpy()  # (B, 24)
    files.convert_file(tmp_path / "hf", tmp_path / "m.npz")
    flat = npz.read_npz(tmp_path / "m.npz")
    assert flat["pre_logits/kernel"].shape == (48, 24) and "head/kernel" not in flat
    model = _flax("d48-k3-p8", tanh=True, num_classes=0, rep=24)
    _close(_flax_from_npz(model, tmp_path / "m.npz", images), want)
    # and back: npz → HF → ViTModel.from_pretrained, the same pooler output.
    files.convert_file(tmp_path / "m.npz", tmp_path / "hf2")
    again, info = ViTModel.from_pretrained(tmp_path / "hf2", output_loading_info=True)
    assert not any(info.values()), info
    assert again.config.pooler_output_size == 24 and again.config.pooler_act == "tanh"
    with torch.no_grad():
        np.testing.assert_array_equal(again.eval()(_nchw(images)).pooler_output.numpy(), want)


def _npz(tmp_path: Path, **kw) -> Path:
    """A random npz checkpoint, quickly: vit_torch's model (the Flax one's twin) saves it."""
    torch.manual_seed(0)
    model = create_model("testing", num_classes=kw.pop("num_classes", 5), img_size=IMG, **kw)
    convert.save_npz(_randomised(model), tmp_path / "m.npz")
    return tmp_path / "m.npz"


@pytest.mark.parametrize("kw,message", [
    ({"classifier": "gap"}, "'gap' model"),
    ({"representation_size": 16}, "both pre_logits and a head"),
])
def test_models_hf_cannot_hold_are_refused(tmp_path, kw, message):
    path = _npz(tmp_path, **kw)
    with pytest.raises(CheckpointError, match=message):
        files.convert_file(path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("change,message", [
    ({"model_type": "deit"}, "model_type 'deit'"),
    ({"qkv_bias": False}, "qkv_bias=false"),
    ({"hidden_act": "relu"}, "hidden_act 'relu'"),
    ({"hidden_size": 64}, "hidden_size=64 but the weights have 32"),
    ({"image_size": 64}, "image_size=64 but the weights have 32"),
])
def test_bad_hf_configs_are_refused(tmp_path, change, message):
    hf = ViTForImageClassification(_hf_config("d32-k4-p4", tanh=True))
    hf.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match=message):
        files.convert_file(tmp_path / "hf", tmp_path / "m.npz")


def test_hf_eps_labels_and_options(tmp_path):
    names = ["cat", "dog", "emu", "fox", "gnu"]
    config = _hf_config("d32-k4-p4", tanh=True, id2label=dict(enumerate(names)),
                        label2id={n: i for i, n in enumerate(names)})
    config.layer_norm_eps = 1e-12
    ViTForImageClassification(config).save_pretrained(tmp_path / "hf")
    notes = files.convert_file(tmp_path / "hf", tmp_path / "m.npz",
                               labels_path=str(tmp_path / "labels.txt"))
    assert any("layer_norm_eps is 1e-12" in n for n in notes)
    assert (tmp_path / "labels.txt").read_text().split() == names
    with pytest.raises(ConfigError, match="--gelu disagrees"):
        files.convert_file(tmp_path / "hf", tmp_path / "m.npz", gelu_approximate=False)
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(ConfigError, match="5 classes but 2 labels"):
        files.convert_file(tmp_path / "m.npz", tmp_path / "hf2",
                           labels_path=str(tmp_path / "two.txt"))
    with pytest.raises(CheckpointError, match="not a S/16"):
        files.convert_file(tmp_path / "hf", tmp_path / "m.npz", variant="S/16")


def test_hf_layer_norm_eps_converts_exactly(tmp_path):
    """HF's 1e-12 epsilon travels in the spec beside the npz: both twins compute HF's logits."""
    config = _hf_config("d32-k4-p4", tanh=False)
    config.layer_norm_eps = 1e-12
    hf = _randomised(ViTForImageClassification(config))
    with torch.no_grad():  # small LayerNorm inputs, where the epsilon shows
        hf.vit.embeddings.patch_embeddings.projection.weight.mul_(1e-3)
        hf.vit.embeddings.patch_embeddings.projection.bias.mul_(1e-3)
        hf.vit.embeddings.position_embeddings.mul_(1e-3)
        hf.vit.embeddings.cls_token.mul_(1e-3)
    hf.save_pretrained(tmp_path / "hf")
    images = 1e-2 * _images()
    with torch.no_grad():
        want = hf(_nchw(images)).logits.numpy()
    files.convert_file(tmp_path / "hf", tmp_path / "m.npz")
    _, spec = read_official(tmp_path / "m.npz")
    assert (spec.layer_norm_eps, spec.gelu_approximate) == (1e-12, False)
    params = checkpoint.load_npz(tmp_path / "m.npz")
    _close(_apply(models.VisionTransformer(spec), params, images), want)
    twin = convert.load_npz(torch_vit.VisionTransformer(spec), tmp_path / "m.npz")
    with torch.no_grad():
        _close(twin(_nchw(images)).numpy(), want)
    # The epsilon matters here: the official 1e-6 misses HF's logits by more than the bound.
    official = models.VisionTransformer(spec.replace(layer_norm_eps=1e-6))
    off = _apply(official, params, images)
    assert np.max(np.abs(off - want)) / np.max(np.abs(want)) > 10 * LOGITS_REL
    # And back: the HF config says 1e-12 again.
    files.convert_file(tmp_path / "m.npz", tmp_path / "hf2")
    assert json.loads((tmp_path / "hf2" / "config.json").read_text())["layer_norm_eps"] == 1e-12


def _run(*args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "vit_torch", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=path))


@pytest.mark.slow  # three subprocesses that import torch: ~8 s alone, ~25 s on a busy box
def test_cli_both_directions(tmp_path):
    """The real command line: npz → HF directory → npz is bit-exact; files are 0644-ish."""
    path = _npz(tmp_path, **SIZES["d48-k3-p8"])
    r = _run(str(path), str(tmp_path / "hf"), "--gelu", "exact")
    assert r.returncode == 0, r.stderr
    r = _run(str(tmp_path / "hf"), str(tmp_path / "back.npz"))
    assert r.returncode == 0, r.stderr
    assert "note: the model uses the exact (erf) GELU" in r.stderr
    a, b = npz.read_npz(path), npz.read_npz(tmp_path / "back.npz")
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    umask = os.umask(0)
    os.umask(umask)
    for f in ("hf/config.json", "hf/model.safetensors", "back.npz"):
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o666 & ~umask, f
    r = _run(str(tmp_path / "hf"), str(tmp_path / "x.npz"), "--variant", "Ti/16")
    assert r.returncode == 2 and r.stderr.startswith("error: The checkpoint is not a Ti/16")
    assert len(r.stderr.strip().splitlines()) == 1 and "heads 3" in r.stderr


def test_headless_model_is_a_vit_model_without_pooler(tmp_path):
    path = _npz(tmp_path, num_classes=0)
    notes = files.convert_file(path, tmp_path / "hf")
    assert any("add_pooling_layer=False" in n for n in notes)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [
        "ViTModel"]
    model, info = ViTModel.from_pretrained(tmp_path / "hf", add_pooling_layer=False,
                                           output_loading_info=True)
    assert not any(info.values()), info
    tmodel = convert.load_npz(create_model("testing", num_classes=0, img_size=IMG), path)
    images = _nchw(_images())
    with torch.no_grad():
        want = tmodel(images, return_features=True)[1]["encoded"].numpy()
        got = model.eval()(images).last_hidden_state.numpy()
    assert_rel_close({"encoded": got}, {"encoded": want}, LOGITS_REL)
