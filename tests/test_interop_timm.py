"""timm ⇄ the official npz ⇄ vit_jax, against the real timm.

timm's `VisionTransformer` uses the exact (erf) GELU, so the Flax side is built with
`gelu_approximate=False`; logits must agree within the parity suite's float32 bound.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

timm = pytest.importorskip("timm")
from timm.models.vision_transformer import VisionTransformer as TimmViT  # noqa: E402

from parity.harness import LOGITS_REL, assert_rel_close  # noqa: E402
from vit_core import npz  # noqa: E402
from vit_core.errors import CheckpointError  # noqa: E402
from vit_core.params import spec_from_official  # noqa: E402
from vit_jax.model import vit as models  # noqa: E402
from vit_jax.weights import checkpoint  # noqa: E402
from vit_torch import convert, files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMG = 32
# timm's twin of the "testing" variant: width 32, 2 blocks, 4 heads, MLP 64, patch 4.
TINY = dict(img_size=IMG, patch_size=4, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
            num_classes=5)
GAP = dict(class_token=False, global_pool="avg", fc_norm=False)  # the official "gap"
# timm options of each official classifier ("map": big_vision's MAPHead is attn_pool).
TIMM_OPTIONS = {"token": {}, "gap": GAP, "map": dict(class_token=False, global_pool="map")}


def _timm(seed: int = 0, **kw) -> TimmViT:
    torch.manual_seed(seed)
    model = TimmViT(**{**TINY, **kw})
    with torch.no_grad():  # timm zero-inits the head and biases: noise everywhere
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def _images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, IMG, IMG, 3)).astype(np.float32)


def _timm_logits(model: TimmViT, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def _flax(classifier: str) -> models.VisionTransformer:
    return models.create_model("testing", num_classes=5, classifier=classifier,
                               gelu_approximate=False)


def _flax_logits(model: models.VisionTransformer, params: dict, images: np.ndarray
                 ) -> np.ndarray:
    checkpoint.check_params(params, models.param_shapes(model, IMG))
    return np.asarray(jax.jit(model.apply)({"params": params}, images))


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert np.max(np.abs(want)) > 0.1  # random weights: not a zero-init head's zeros
    assert_rel_close({"logits": got}, {"logits": want}, LOGITS_REL)


@pytest.mark.parametrize("classifier,ext", [("token", ".safetensors"), ("gap", ".pth"),
                                            ("map", ".safetensors")])
def test_timm_to_vit_jax(tmp_path, classifier, ext):
    model = _timm(**TIMM_OPTIONS[classifier])
    path = tmp_path / f"timm{ext}"
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, path) if ext == ".safetensors" else torch.save(sd, path)
    files.convert_file(path, tmp_path / "m.npz", variant="testing")
    images = _images()
    got = _flax_logits(_flax(classifier), checkpoint.load_npz(tmp_path / "m.npz"), images)
    _close(got, _timm_logits(model, images))


def test_no_embed_class_maps_when_said(tmp_path):
    model = _timm(no_embed_class=True)
    flat = convert.state_dict_to_npz(model.state_dict(), num_heads=4, no_embed_class=True)
    np.testing.assert_array_equal(flat["Transformer/posembed_input/pos_embedding"][0, 0], 0)
    images = _images()
    got = _flax_logits(_flax("token"), checkpoint.npz_dict_to_params(flat), images)
    _close(got, _timm_logits(model, images))
    # Unsaid, the position embedding is a square grid without the class token's row: the
    # conversion itself refuses it (never a file that a later step rejects) and says what to do.
    with pytest.raises(CheckpointError, match=r"Cannot convert key pos_embed: its 64 rows are "
                       r"a square grid without the 1 class/register token\(s\).*"
                       r"no_embed_class=True; say so \(--no-embed-class\)"):
        convert.state_dict_to_npz(model.state_dict(), num_heads=4)


@pytest.mark.parametrize("kw,key", [
    (dict(class_token=False, global_pool="avg"), "fc_norm.weight"),  # timm's default for avg
    (dict(pre_norm=True), "norm_pre.weight"),
    (dict(global_pool="map"), "cls_token"),  # a class token beside the MAP head
    (dict(init_values=0.1), "blocks.0.ls1.gamma"),
    (dict(qk_norm=True), "blocks.0.attn.q_norm.weight"),
])
def test_timm_extras_are_refused_by_key(kw, key):
    sd = TimmViT(**{**TINY, **kw}).state_dict()
    with pytest.raises(CheckpointError) as e:
        convert.state_dict_to_npz(sd, num_heads=4)
    message = str(e.value)
    assert f"Cannot convert key {key}" in message and "\n" not in message


@pytest.mark.parametrize("classifier", ["token", "gap", "map"])
def test_vit_jax_to_timm_strict(tmp_path, classifier):
    """vit_jax params → npz → .safetensors → timm `load_state_dict(strict=True)`."""
    flax_model = _flax(classifier)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(np.float32),
                          models.param_shapes(flax_model, IMG))
    checkpoint.save_npz(tmp_path / "m.npz", params)
    files.convert_file(tmp_path / "m.npz", tmp_path / "m.safetensors")
    model = TimmViT(**{**TINY, **TIMM_OPTIONS[classifier]}).eval()
    model.load_state_dict(load_file(tmp_path / "m.safetensors"), strict=True)
    images = _images(1)
    _close(_timm_logits(model, images), _flax_logits(flax_model, params, images))


@pytest.mark.parametrize("classifier", ["token", "gap", "map"])
def test_register_tokens_both_ways(tmp_path, classifier):
    """timm's `reg_tokens` are the spec's `num_registers`: timm → npz → vit_jax and back."""
    model = _timm(reg_tokens=3, **TIMM_OPTIONS[classifier])
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, tmp_path / "t.safetensors")
    files.convert_file(tmp_path / "t.safetensors", tmp_path / "m.npz", variant="testing")
    params = checkpoint.load_npz(tmp_path / "m.npz")
    assert params["registers"].shape == (1, 3, 32)
    flax_model = models.create_model("testing", num_classes=5, classifier=classifier,
                                     gelu_approximate=False, num_registers=3)
    images = _images()
    _close(_flax_logits(flax_model, params, images), _timm_logits(model, images))
    files.convert_file(tmp_path / "m.npz", tmp_path / "back.safetensors")
    back = TimmViT(**{**TINY, **TIMM_OPTIONS[classifier]}, reg_tokens=3).eval()
    back.load_state_dict(load_file(tmp_path / "back.safetensors"), strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_refused_conversions_write_nothing(tmp_path):
    """A model the layout cannot hold stops at conversion, before any file is written."""
    save_file({k: v.contiguous() for k, v in TimmViT(**TINY, global_pool="map").state_dict()
               .items()}, tmp_path / "clsmap.safetensors")
    with pytest.raises(CheckpointError, match=r"^Cannot convert key cls_token: a class token "
                       r"together with an attention-pooling head"):
        files.convert_file(tmp_path / "clsmap.safetensors", tmp_path / "o.npz", variant="testing")
    save_file({k: v.contiguous() for k, v in _timm(no_embed_class=True).state_dict().items()},
              tmp_path / "nec.safetensors")
    with pytest.raises(CheckpointError, match="--no-embed-class"):
        files.convert_file(tmp_path / "nec.safetensors", tmp_path / "o.npz", variant="testing")
    # A gap model has no class token: Hugging Face's ViT cannot hold it (refused, not a crash).
    checkpoint.save_npz(tmp_path / "gap.npz", jax.tree.map(
        lambda s: np.zeros(s.shape, s.dtype), models.param_shapes(_flax("gap"), IMG)))
    with pytest.raises(CheckpointError, match="'gap' model \\(no class token\\) to Hugging"):
        files.convert_file(tmp_path / "gap.npz", tmp_path / "hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clsmap.safetensors", "gap.npz", "nec.safetensors"]


def test_timm_registry_model_round_trip():
    """timm.create_model('vit_tiny_patch16_224') ⇄ npz: a Ti/16, every tensor bit-exact."""
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    sd = model.state_dict()
    flat = convert.state_dict_to_npz(sd, num_heads=3)
    spec = spec_from_official(flat)
    convert.check_variant(spec, "Ti/16")
    assert spec.num_heads == 3 and spec.num_classes == 10 and spec.num_patches == 196
    back = convert.npz_to_state_dict(flat)
    model.load_state_dict(back, strict=True)
    assert sorted(back) == sorted(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


@pytest.mark.slow  # two subprocesses that import torch: ~6 s alone, ~20 s on a busy box
def test_cli_timm_state_dict_to_npz(tmp_path):
    model = _timm()
    torch.save(model.state_dict(), tmp_path / "timm.pth")
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vit_torch", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    r = run(str(tmp_path / "timm.pth"), str(tmp_path / "m.npz"), "--variant", "testing")
    assert r.returncode == 0, r.stderr
    want = convert.state_dict_to_npz(model.state_dict(), num_heads=4)
    got = npz.read_npz(tmp_path / "m.npz")
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    torch.save(TimmViT(**TINY, pre_norm=True).state_dict(), tmp_path / "pre.pth")
    r = run(str(tmp_path / "pre.pth"), str(tmp_path / "x.npz"), "--variant", "testing")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: Cannot convert key norm_pre.weight: timm's norm_pre (a LayerNorm before the "
        "blocks, pre_norm=True) has no counterpart in the official ViT layout."]
