"""vit_torch: timm key names, the bit-exact npz map, options, errors, the CLI, no jax.

Pure torch/numpy: nothing here imports jax (the Flax ⇄ torch parity lives in parity/).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vit_core import errors, layouts, npz
from vit_core.params import spec_from_official
from vit_core.posemb import resize_posemb
from vit_torch import convert, files
from vit_torch.model import VisionTransformer, create_model

ROOT = Path(__file__).resolve().parents[1]
IMG = 32  # testing variant: patch 4 → an 8x8 grid


def _tiny(seed: int = 0, **kw) -> VisionTransformer:
    """The testing variant with every parameter randomised (zero head/cls prove nothing)."""
    torch.manual_seed(seed)
    model = create_model("testing", num_classes=5, img_size=IMG, **kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _images(b: int = 2, size: int = IMG) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(1))


def _run(*args: str) -> subprocess.CompletedProcess:
    # ROOT first on the path: run this checkout, not whatever copy happens to be installed.
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


# ------------------------------------------------------------------------ key names
def _timm_keys(layers: int, d: int, mlp: int, p: int, tokens: int, cls: bool, rep, classes):
    """The expected timm VisionTransformer state-dict layout, written out independently."""
    keys = {"patch_embed.proj.weight": (d, 3, p, p), "patch_embed.proj.bias": (d,),
            "pos_embed": (1, tokens, d), "norm.weight": (d,), "norm.bias": (d,)}
    if cls:
        keys["cls_token"] = (1, 1, d)
    for i in range(layers):
        b = f"blocks.{i}."
        keys.update({
            b + "norm1.weight": (d,), b + "norm1.bias": (d,),
            b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "norm2.weight": (d,), b + "norm2.bias": (d,),
            b + "mlp.fc1.weight": (mlp, d), b + "mlp.fc1.bias": (mlp,),
            b + "mlp.fc2.weight": (d, mlp), b + "mlp.fc2.bias": (d,),
        })
    width = d
    if rep:
        keys.update({"pre_logits.fc.weight": (rep, d), "pre_logits.fc.bias": (rep,)})
        width = rep
    keys.update({"head.weight": (classes, width), "head.bias": (classes,)})
    return keys


@pytest.mark.parametrize("classifier", ["token", "gap"])
@pytest.mark.parametrize("rep", [None, 16])
def test_state_dict_follows_timm_names(classifier, rep):
    model = create_model("testing", num_classes=5, img_size=IMG, classifier=classifier,
                                   representation_size=rep)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    cls = classifier == "token"
    assert got == _timm_keys(2, 32, 64, 4, 64 + cls, cls, rep, 5)


@pytest.mark.parametrize("variant,count", [("B/16", 86_567_656), ("Ti/16", 5_717_416)])
def test_parameter_count_equals_released_model(variant, count):
    with torch.device("meta"):  # shapes only, no memory or init time
        model = create_model(variant, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == count


# ------------------------------------------------------------------------ npz map
@pytest.mark.parametrize("kw", [{}, {"classifier": "gap"}, {"representation_size": 16},
                                {"num_classes": 0}])
def test_npz_round_trips_are_bit_exact_both_ways(kw):
    kw = dict(kw)
    num_classes = kw.pop("num_classes", 5)
    torch.manual_seed(0)
    model = create_model("testing", num_classes=num_classes, img_size=IMG, **kw)
    sd = {k: v + 0.1 * torch.randn_like(v) for k, v in model.state_dict().items()}
    flat = convert.state_dict_to_npz(sd, num_heads=4)
    back = convert.npz_to_state_dict(flat)
    assert list(back) == list(sd)
    for k in sd:
        assert back[k].dtype == sd[k].dtype and torch.equal(back[k], sd[k]), k
    # npz → torch → npz, in float16 to show that the dtype is kept too.
    flat16 = {k: v.astype(np.float16) for k, v in flat.items()}
    again = convert.state_dict_to_npz(convert.npz_to_state_dict(flat16), num_heads=4)
    assert set(again) == set(flat16)
    for k in flat16:
        assert again[k].dtype == np.float16 and again[k].flags.c_contiguous, k
        np.testing.assert_array_equal(again[k], flat16[k], err_msg=k)


def test_npz_layout_and_qkv_split():
    model = _tiny(representation_size=16)
    sd = model.state_dict()
    flat = convert.state_dict_to_npz(sd, num_heads=4)
    a = "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/"
    assert flat["embedding/kernel"].shape == (4, 4, 3, 32)  # HWIO
    assert flat[a + "query/kernel"].shape == (32, 4, 8)
    assert flat[a + "value/bias"].shape == (4, 8)
    assert flat[a + "out/kernel"].shape == (4, 8, 32)
    assert flat["pre_logits/kernel"].shape == (32, 16) and flat["head/kernel"].shape == (16, 5)
    qkv = sd["blocks.1.attn.qkv.weight"].numpy()  # (3D, D): rows are output features
    np.testing.assert_array_equal(flat[a + "key/kernel"].reshape(32, 32), qkv[32:64].T)
    np.testing.assert_array_equal(flat[a + "value/bias"].reshape(-1),
                                  sd["blocks.1.attn.qkv.bias"].numpy()[64:])
    np.testing.assert_array_equal(flat["embedding/kernel"][1, 2, 0],
                                  sd["patch_embed.proj.weight"].numpy()[:, 0, 1, 2])


def test_bad_keys_are_named():
    flat = convert.state_dict_to_npz(_tiny().state_dict(), num_heads=4)
    key = "Transformer/encoderblock_1/MlpBlock_3/Dense_1/kernel"
    missing = {k: v for k, v in flat.items() if k != key}
    with pytest.raises(errors.CheckpointError, match=f"missing key {key}"):
        convert.npz_to_state_dict(missing)
    with pytest.raises(errors.CheckpointError, match="unexpected key extra/kernel"):
        convert.npz_to_state_dict({**flat, "extra/kernel": np.zeros(3, np.float32)})
    bad = {**flat, key: np.zeros((64, 31), np.float32)}
    msg = r"Dense_1/kernel: checkpoint \(64, 31\), model \(64, 32\)"  # names both shapes
    with pytest.raises(errors.CheckpointError, match=msg):
        convert.npz_to_state_dict(bad)
    sd = _tiny().state_dict()
    sd["blocks.0.attn.proj.weight"] = torch.zeros(32, 33)
    with pytest.raises(errors.CheckpointError, match=r"attn.proj.weight.*\(32, 33\)"):
        convert.state_dict_to_npz(sd, num_heads=4)


def test_save_and_load_npz(tmp_path):
    model = _tiny()
    convert.save_npz(model, tmp_path / "m.npz")
    other = convert.load_npz(create_model("testing", num_classes=5, img_size=IMG),
                               tmp_path / "m.npz")
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)
    with pytest.raises(errors.CheckpointError, match=r"missing key pre_logits/kernel"):
        convert.load_npz(create_model("testing", num_classes=5, img_size=IMG,
                                                  representation_size=8), tmp_path / "m.npz")


def test_load_npz_resizes_posemb_only_when_asked(tmp_path):
    convert.save_npz(_tiny(), tmp_path / "m.npz")
    big = create_model("testing", num_classes=5, img_size=48)  # 12x12 grid
    with pytest.raises(errors.CheckpointError, match="resize=True"):
        convert.load_npz(big, tmp_path / "m.npz")
    gap = create_model("testing", num_classes=5, img_size=IMG, classifier="gap")
    with pytest.raises(errors.CheckpointError, match="unexpected key cls "):
        convert.load_npz(gap, tmp_path / "m.npz", resize=True)  # not a resizing problem
    convert.load_npz(big, tmp_path / "m.npz", resize=True)
    posemb = npz.read_npz(tmp_path / "m.npz")["Transformer/posembed_input/pos_embedding"]
    want = resize_posemb(posemb, (12, 12), 1)
    np.testing.assert_array_equal(big.pos_embed.detach().numpy(), want)
    assert big(_images(size=48)).shape == (2, 5)


# ------------------------------------------------------------------------ the model
def test_features_attention_and_pooling():
    model = _tiny()
    x = _images()
    with torch.no_grad():
        logits, feats = model(x, return_features=True, return_attention=True)
        plain = model(x)
    assert logits.shape == (2, 5)
    assert set(feats) == {"embedded", "block_0", "block_1", "encoded", "pre_logits",
                          "attention_0", "attention_1"}
    assert feats["embedded"].shape == feats["encoded"].shape == (2, 65, 32)  # token layout
    assert feats["attention_1"].shape == (2, 4, 65, 65)
    torch.testing.assert_close(feats["attention_0"].sum(-1), torch.ones(2, 4, 65))
    torch.testing.assert_close(plain, logits, rtol=1e-5, atol=1e-5)  # SDPA = explicit softmax
    torch.testing.assert_close(feats["pre_logits"], feats["encoded"][:, 0])
    # "embedded" is before the position embedding: the class token is still the raw cls.
    torch.testing.assert_close(feats["embedded"][:, 0], model.cls_token[0].expand(2, -1))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), plain)
    assert "attention_0" not in model(x, return_features=True)[1]


def test_gap_pools_after_the_final_norm():
    model = _tiny(classifier="gap")
    with torch.no_grad():
        _, feats = model(_images(), return_features=True)
    assert model.cls_token is None and feats["encoded"].shape == (2, 64, 32)
    torch.testing.assert_close(feats["pre_logits"], feats["encoded"].mean(1))


def test_gelu_default_is_tanh_and_exact_differs():
    model = _tiny()
    assert model.blocks[0].mlp.approximate == "tanh"
    exact = _tiny(gelu_approximate=False)
    assert exact.blocks[0].mlp.approximate == "none"
    x = _images()
    with torch.no_grad():
        a, b = model(x), exact(x)
    assert not torch.allclose(a, b, rtol=0, atol=1e-7)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-2)  # close, but not the same function


def test_dropout_and_stochastic_depth_only_in_training():
    model = _tiny(dropout_rate=0.1, attention_dropout_rate=0.1, stochastic_depth=0.2)
    assert [b.drop_path for b in model.blocks] == [0.0, 0.2]  # linear over depth
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        model.train()
        assert not torch.equal(model(x), model(x))


def test_head_init_and_no_head():
    model = create_model("testing", num_classes=3, img_size=IMG, head_bias_init=-10.0)
    assert torch.all(model.head.weight == 0) and torch.all(model.head.bias == -10.0)
    headless = create_model("testing", num_classes=0, img_size=IMG)
    assert headless(_images()).shape == (2, 32)


def test_bad_input_errors():
    model = create_model("testing", num_classes=5, img_size=IMG)
    with pytest.raises(ValueError, match="3 colour channels"):
        model(torch.zeros(1, IMG, IMG, 3))  # NHWC by mistake
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        model(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"[Rr]esize the position embedding"):
        model(torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match="Unknown ViT variant 'B/17'"):
        create_model("B/17", num_classes=5)
    with pytest.raises(errors.ConfigError, match="scan"):
        create_model("testing", num_classes=5, scan=True)  # a jax-only option
    with pytest.raises(ValueError, match="classifier"):
        create_model("testing", num_classes=5, classifier="prr")


# ------------------------------------------------------------------------ CLI and imports
@pytest.mark.parametrize("ext", [".pt", ".safetensors"])
def test_cli_round_trip_is_bit_exact(tmp_path, ext):
    src, mid, out = tmp_path / "a.npz", tmp_path / f"m{ext}", tmp_path / "b.npz"
    convert.save_npz(_tiny(representation_size=16), src)
    r = _run("-m", "vit_torch", str(src), str(mid))
    assert r.returncode == 0, r.stderr
    r = _run("-m", "vit_torch", str(mid), str(out), "--variant", "testing")
    assert r.returncode == 0, r.stderr
    a, b = npz.read_npz(src), npz.read_npz(out)
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


class _Evil:
    """Unpickling this would run a shell command; the converter must refuse it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cli_refuses_pickled_objects(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"head.weight": torch.zeros(2), "x": _Evil(str(marker))}, evil)
    r = _run("-m", "vit_torch", str(evil), str(tmp_path / "o.npz"), "--variant", "testing")
    assert r.returncode == 2 and "pickled" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "o.npz").exists()
    r = _run("-m", "vit_torch", "--help")
    assert r.returncode == 0 and "weights_only" in r.stdout


def test_bad_requests_raise_user_errors(tmp_path):
    """What the CLI turns into one `error:` line (exit 2; see test_cli_refuses_pickled_objects)."""
    convert.save_npz(_tiny(), tmp_path / "a.npz")
    torch.save(_tiny().state_dict(), tmp_path / "m.pt")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated")
    config, ckpt = errors.ConfigError, errors.CheckpointError
    cases = [
        ([tmp_path / "m.pt", tmp_path / "o.npz"], {}, config, "--variant"),
        ([tmp_path / "a.npz", tmp_path / "o.pt"], {"variant": "B/16"}, ckpt, "not a B/16"),
        ([tmp_path / "a.npz", tmp_path / "o.npz"], {}, config, "nothing to convert"),
        ([tmp_path / "a.npz", tmp_path / "o.npy"], {}, config, "Cannot tell the format"),
        ([tmp_path / "nope.pt", tmp_path / "o.npz"], {"variant": "testing"}, ckpt, "not found"),
        ([tmp_path / "a.npz", tmp_path / "o.pt"], {"variant": "X/1"}, config,
         "Unknown variant 'X/1'"),
        ([tmp_path / "a.npz", tmp_path / "o.pt"], {"labels_path": "l.txt"}, config, "--labels"),
        ([tmp_path / "hf", tmp_path / "o.npz"], {}, ckpt, "no config.json"),
    ]
    for args, kw, kind, message in cases:
        with pytest.raises(kind, match=message):
            files.convert_file(*args, **kw)
    # read_npz's own error (vit_jax.weights.checkpoint's CheckpointError until it is the
    # errors kind)
    with pytest.raises(errors.CheckpointError, match=r"Not a valid \.npz \(zip\) file"):
        files.convert_file(tmp_path / "junk.npz", tmp_path / "o.pt")
    assert not any(tmp_path.glob("o.*"))


def test_wrong_variant_names_both_head_counts(tmp_path):
    """A Ti/16 (3 heads) checked as an S/16 (6 heads): both sets of numbers, right."""
    with torch.device("meta"):
        sd = create_model("Ti/16", num_classes=10).state_dict()
    spec = layouts.spec_from_timm(sd, num_heads=1)  # meta tensors: shapes only
    with pytest.raises(errors.CheckpointError) as e:
        convert.check_variant(spec, "S/16", heads_stored=False)
    assert str(e.value) == (
        "The checkpoint is not a S/16: it has patch_size 16, hidden_size 192, num_layers 12, "
        "num_heads not stored, mlp_dim 768; S/16 has patch_size 16, hidden_size 384, "
        "num_layers 12, num_heads 6, mlp_dim 1536.")
    flat = convert.state_dict_to_npz({k: torch.empty(v.shape) for k, v in sd.items()},
                                     num_heads=3)
    want = (r"it has patch_size 16, hidden_size 192, num_layers 12, num_heads 3, mlp_dim 768; "
            r"S/16 has .* num_heads 6, ")
    with pytest.raises(errors.CheckpointError, match=want + r"mlp_dim 1536\.$"):
        convert.check_variant(spec_from_official(flat), "S/16")
    # Through the files: a state dict and an npz of the testing variant, asked for Ti/16.
    torch.save(_tiny().state_dict(), tmp_path / "m.pt")
    with pytest.raises(errors.CheckpointError,
                       match=r"not stored, mlp_dim 64; Ti/16 has .* num_heads 3"):
        files.convert_file(tmp_path / "m.pt", tmp_path / "o.npz", variant="Ti/16")
    convert.save_npz(_tiny(), tmp_path / "a.npz")
    with pytest.raises(errors.CheckpointError,
                       match=r"num_heads 4, mlp_dim 64; Ti/16 has .* num_heads 3"):
        files.convert_file(tmp_path / "a.npz", tmp_path / "o.pt", variant="Ti/16")


def test_written_files_have_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    convert.save_npz(_tiny(), tmp_path / "a.npz")
    for name in ("m.pt", "m.safetensors"):
        files.convert_file(tmp_path / "a.npz", tmp_path / name)
    for name in ("a.npz", "m.pt", "m.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert not list(tmp_path.glob("*.tmp"))  # no temp file left behind


def test_vit_torch_never_imports_jax():
    code = ("import sys, torch, tempfile, os\n"
            "import vit_torch, vit_torch.convert, vit_torch.files\n"
            "from vit_torch.model import create_model\n"
            "model = create_model('testing', num_classes=2, img_size=8)\n"
            "model(torch.zeros(1, 3, 8, 8))\n"
            "d = tempfile.mkdtemp()\n"
            "vit_torch.convert.save_npz(model, os.path.join(d, 'a.npz'))\n"
            "for dst in ('m.safetensors', 'hf'):\n"
            "    vit_torch.files.convert_file(os.path.join(d, 'a.npz'), os.path.join(d, dst))\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax'))\n"
            "assert not bad, bad\n")
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr
