"""big_vision and linen-numbered checkpoints ⇄ the official layout, and released names.

The big_vision files are written by a small Flax model with big_vision's module structure
(its `models/vit.py`: auto-named linen sub-modules, `pos_embedding` at the top, `MAPHead`,
`nn.scan` blocks), so the key names and shapes come from Flax itself, not from the map
under test; the file is saved the way big_vision's `save_checkpoint` flattens a tree.
"""

import functools

import flax.linen as nn
import flax.training.checkpoints
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from vit_core import layouts, npz
from vit_core.errors import CheckpointError
from vit_core.params import POSEMB_KEY, spec_from_official
from vit_core.spec import ViTSpec
from vit_jax.model import vit as models
from vit_jax.weights import checkpoint, pretrained

IMAGE, PATCH, WIDTH, DEPTH, HEADS, MLP, CLASSES, REP = 16, 4, 32, 2, 4, 64, 5, 16


# ------------------------------------------------------ big_vision's ViT, in miniature
class MlpBlock(nn.Module):  # the class names give linen's auto names (MlpBlock_0, ...)
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.gelu(nn.Dense(self.mlp_dim)(x))  # Dense_0 first: linen numbers in call order
        return nn.Dense(x.shape[-1])(y)


class Encoder1DBlock(nn.Module):
    @nn.compact
    def __call__(self, x, unused):
        y = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=HEADS)(y, y)
        return x + MlpBlock(MLP)(nn.LayerNorm()(x)), None


class Encoder(nn.Module):
    scan: bool

    @nn.compact
    def __call__(self, x):
        if self.scan:
            blocks = nn.scan(Encoder1DBlock, variable_axes={"params": 0},
                             split_rngs={"params": True}, in_axes=nn.broadcast, length=DEPTH)
            x, _ = blocks(name="encoderblock")(x, None)
        else:
            for i in range(DEPTH):
                x, _ = Encoder1DBlock(name=f"encoderblock_{i}")(x, None)
        return nn.LayerNorm(name="encoder_norm")(x)


class MAPHead(nn.Module):
    @nn.compact
    def __call__(self, x):
        probe = self.param("probe", nn.initializers.normal(1.0), (1, 1, x.shape[-1]))
        probe = jnp.tile(probe, [x.shape[0], 1, 1])  # (B, 1, D)
        x = nn.MultiHeadDotProductAttention(num_heads=HEADS)(probe, x)
        return (x + MlpBlock(MLP)(nn.LayerNorm()(x)))[:, 0]  # (B, D)


def posemb_sincos_2d(h, w, width, temperature=10_000.0):
    """big_vision's fixed 2-D sin-cos position embedding (MoCo v3), (1, h*w, D)."""
    y, x = jnp.mgrid[:h, :w]
    omega = 1.0 / temperature ** (jnp.arange(width // 4) / (width // 4 - 1))
    y, x = jnp.outer(y.flatten(), omega), jnp.outer(x.flatten(), omega)
    return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)[None]


class BigVisionViT(nn.Module):
    pool_type: str  # "tok" | "gap" | "map"
    posemb: str = "learn"
    scan: bool = False

    @nn.compact
    def __call__(self, image):
        x = nn.Conv(WIDTH, (PATCH, PATCH), strides=(PATCH, PATCH), padding="VALID",
                    name="embedding")(image)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)  # (B, N, D)
        if self.posemb == "learn":  # added before the class token is put in front
            x = x + self.param("pos_embedding", nn.initializers.normal(1.0), (1, h * w, c))
        else:
            x = x + posemb_sincos_2d(h, w, c)
        if self.pool_type == "tok":
            cls = self.param("cls", nn.initializers.normal(1.0), (1, 1, c))
            x = jnp.concatenate([jnp.tile(cls, [n, 1, 1]), x], axis=1)  # (B, 1 + N, D)
        x = Encoder(self.scan, name="Transformer")(x)
        x = {"tok": lambda: x[:, 0], "gap": lambda: x.mean(axis=1), "map": lambda: MAPHead()(x)}[
            self.pool_type]()
        x = jnp.tanh(nn.Dense(REP, name="pre_logits")(x))
        return nn.Dense(CLASSES, name="head")(x)


def _random_params(model, seed):
    """Random values for every parameter of `model` (shapes by tracing: nothing compiles).

    Flax inits zero biases and unit LayerNorm scales; random values everywhere make a
    swapped or dropped parameter visible.
    """
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, IMAGE, IMAGE, 3)))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(0, 0.2, s.shape).astype(np.float32),
                        shapes["params"])


@functools.cache
def _big_vision(pool_type, posemb="learn", scan=False):
    model = BigVisionViT(pool_type, posemb, scan)
    return model, _random_params(model, seed=1)


def _apply(model, params, images):
    return np.asarray(jax.jit(model.apply)({"params": params}, images))


def _save_like_big_vision(path, tree):
    """big_vision `save_checkpoint`: the tree's leaves named by their "/"-joined paths."""
    np.savez(path, **npz.flatten(tree))


def _images():
    return np.random.default_rng(2).uniform(-1, 1, (2, IMAGE, IMAGE, 3)).astype(np.float32)


def _vit_jax(classifier, **kw):
    return models.create_model("testing", num_classes=CLASSES, classifier=classifier,
                               representation_size=REP, **kw)


def _bits_equal(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert x.tobytes() == y.tobytes(), key


# --------------------------------------------------------------------- big_vision files
@pytest.mark.parametrize("pool_type, classifier, scan, prefix", [
    ("tok", "token", False, ""), ("tok", "token", True, "params/"),
    ("gap", "gap", True, ""), ("gap", "gap", False, "params/"),
])
def test_big_vision_file_loads_into_the_vit_jax_model(tmp_path, pool_type, classifier, scan,
                                                      prefix):
    bv_model, bv_params = _big_vision(pool_type, scan=scan)
    tree = {"params": bv_params, "opt": {"mu": bv_params}} if prefix else bv_params
    _save_like_big_vision(tmp_path / "bv.npz", tree)
    loaded = checkpoint.load_npz(tmp_path / "bv.npz")
    model = _vit_jax(classifier)
    checkpoint.check_params(loaded, models.param_shapes(model, IMAGE))
    images = _images()
    np.testing.assert_allclose(_apply(model, loaded, images), _apply(bv_model, bv_params, images),
                               atol=2e-5)
    bv_flat = npz.flatten(bv_params)
    np.testing.assert_array_equal(loaded["embedding"]["kernel"], bv_flat["embedding/kernel"])
    if not scan:  # linen names → released names, values untouched
        np.testing.assert_array_equal(
            loaded["Transformer"]["encoderblock_1"]["MlpBlock_3"]["Dense_0"]["kernel"],
            bv_flat["Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel"])
    posemb = loaded["Transformer"]["posembed_input"]["pos_embedding"]
    if pool_type == "tok":  # big_vision's class token has no posemb: a zero row in front
        np.testing.assert_array_equal(posemb[:, 0], 0.0)
        np.testing.assert_array_equal(posemb[:, 1:], bv_flat["pos_embedding"])
    else:
        np.testing.assert_array_equal(posemb, bv_flat["pos_embedding"])
    assert spec_from_official(checkpoint.params_to_npz_dict(loaded)) == ViTSpec(
        patch_size=PATCH, hidden_size=WIDTH, num_layers=DEPTH, num_heads=HEADS,
        mlp_dim=MLP, classifier=classifier, representation_size=REP,
        num_classes=CLASSES, image_size=(IMAGE, IMAGE))


def test_map_head_and_sincos2d_at_the_key_map_level():
    _, params = _big_vision("map", posemb="sincos2d")
    bv = npz.flatten(params)
    official, spec = layouts.to_official(bv)
    assert POSEMB_KEY not in official  # sincos2d: nothing stored
    head = {k: v.shape for k, v in bv.items() if k.startswith("MAPHead_0/")}
    assert head == {
        "MAPHead_0/probe": (1, 1, WIDTH),
        **{f"MAPHead_0/MultiHeadDotProductAttention_0/{n}/kernel": (WIDTH, HEADS, WIDTH // HEADS)
           for n in ("query", "key", "value")},
        **{f"MAPHead_0/MultiHeadDotProductAttention_0/{n}/bias": (HEADS, WIDTH // HEADS)
           for n in ("query", "key", "value")},
        "MAPHead_0/MultiHeadDotProductAttention_0/out/kernel": (HEADS, WIDTH // HEADS, WIDTH),
        "MAPHead_0/MultiHeadDotProductAttention_0/out/bias": (WIDTH,),
        "MAPHead_0/LayerNorm_0/scale": (WIDTH,), "MAPHead_0/LayerNorm_0/bias": (WIDTH,),
        "MAPHead_0/MlpBlock_0/Dense_0/kernel": (WIDTH, MLP),
        "MAPHead_0/MlpBlock_0/Dense_0/bias": (MLP,),
        "MAPHead_0/MlpBlock_0/Dense_1/kernel": (MLP, WIDTH),
        "MAPHead_0/MlpBlock_0/Dense_1/bias": (WIDTH,),
    }
    for key in head:  # the MAP head keeps big_vision's names and values
        np.testing.assert_array_equal(official[key], bv[key])
    assert (spec.classifier, spec.posemb) == ("map", "sincos2d")
    assert pretrained.model_options_of(spec) == {
        "variant": "testing", "classifier": "map", "representation_size": REP, "posemb": "sincos2d"}


@pytest.mark.parametrize("pool_type, options", [
    ("map", {"classifier": "map"}),
    ("gap", {"classifier": "gap", "posemb": "sincos2d"}),
])
def test_map_and_sincos2d_files_run_in_the_vit_jax_model(tmp_path, pool_type, options):
    posemb = options.get("posemb", "learn")
    bv_model, bv_params = _big_vision(pool_type, posemb=posemb)
    _save_like_big_vision(tmp_path / "bv.npz", bv_params)
    loaded = checkpoint.load_npz(tmp_path / "bv.npz")
    model = _vit_jax(**options)
    checkpoint.check_params(loaded, models.param_shapes(model, IMAGE))
    images = _images()
    np.testing.assert_allclose(_apply(model, loaded, images), _apply(bv_model, bv_params, images),
                               atol=2e-5)


@pytest.mark.parametrize("pool_type", ["tok", "gap", "map"])
@pytest.mark.parametrize("scan", [False, True], ids=["per-block", "scan"])
def test_big_vision_to_official_and_back_is_bit_exact(pool_type, scan):
    _, params = _big_vision(pool_type, scan=scan)
    bv = npz.flatten(params)
    _bits_equal(layouts.to_big_vision(layouts.to_official(bv)[0], stacked=scan), bv)


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_official_to_big_vision_and_back(tmp_path, classifier):
    model = _vit_jax(classifier)
    params = _random_params(model, seed=4)
    apply = jax.jit(model.apply)  # compiled once for the three calls
    images = _images()
    logits = np.asarray(apply({"params": params}, images))
    for stacked in (False, True):
        checkpoint.save_big_vision_npz(tmp_path / "bv.npz", params, stacked=stacked)
        with np.load(tmp_path / "bv.npz") as f:
            assert "pos_embedding" in f.files and ("cls" in f.files) == (classifier == "token")
            assert ("Transformer/encoderblock/LayerNorm_1/scale" in f.files) == stacked
        back = checkpoint.load_npz(tmp_path / "bv.npz")
        # The class token's posemb row is folded into `cls`: float32 cls + row, then + 0.0,
        # is the very first token the original computes, so the logits are bit-identical.
        np.testing.assert_array_equal(apply({"params": back}, images), logits)
        if classifier == "gap":
            _bits_equal(checkpoint.params_to_npz_dict(back), checkpoint.params_to_npz_dict(params))


def test_bfloat16_arrays_come_back_as_bfloat16(tmp_path):
    value = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    np.savez(tmp_path / "bf16.npz", w=value)  # numpy stores it as 2-byte void
    with np.load(tmp_path / "bf16.npz") as f:
        assert f["w"].dtype.kind == "V"
    got = npz.read_npz(tmp_path / "bf16.npz")["w"]
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.astype(np.float32), value.astype(np.float32))


# ----------------------------------------------------------------- linen block numbering
def _released_params():
    model = _vit_jax("token")
    return model, _random_params(model, seed=6)


def test_linen_numbered_file_loads_as_the_released_numbering(tmp_path):
    _, params = _released_params()
    released = checkpoint.params_to_npz_dict(params)
    # flax's own pre-linen → linen renaming gives the official repository's current names.
    linen = npz.flatten(flax.training.checkpoints.convert_pre_linen(
        npz.unflatten(released)))
    assert "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel" in linen
    assert "Transformer/encoderblock_1/LayerNorm_1/scale" in linen
    assert layouts.block_numbering(linen) == "linen"
    assert layouts.block_numbering(released) == "released"
    npz.write_npz(tmp_path / "linen.npz", linen)
    _bits_equal(checkpoint.params_to_npz_dict(checkpoint.load_npz(tmp_path / "linen.npz")),
                released)


def test_mixed_numbering_is_an_error():
    _, params = _released_params()
    flat = checkpoint.params_to_npz_dict(params)
    mixed = {k.replace("encoderblock_1/MlpBlock_3", "encoderblock_1/MlpBlock_0")
             .replace("encoderblock_1/MultiHeadDotProductAttention_1",
                      "encoderblock_1/MultiHeadDotProductAttention_0")
             .replace("encoderblock_1/LayerNorm_2", "encoderblock_1/LayerNorm_1"): v
             for k, v in flat.items()}
    with pytest.raises(CheckpointError, match=r"mix two numberings: released names in blocks "
                                              r"\[0\], linen names in blocks \[1\]"):
        layouts.to_official(mixed)
    odd = {k.replace("encoderblock_0/MlpBlock_3", "encoderblock_0/MlpBlock_7"): v
           for k, v in flat.items()}
    with pytest.raises(CheckpointError, match=r"encoderblock_0 has sub-modules .*MlpBlock_7"):
        layouts.to_official(odd)


def test_inconsistent_shapes_are_named():
    _, params = _released_params()
    flat = checkpoint.params_to_npz_dict(params)
    flat["Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias"] = np.zeros(7, np.float32)
    del flat["head/bias"]
    with pytest.raises(CheckpointError) as e:
        layouts.to_official(flat)
    assert "missing key head/bias" in str(e.value)
    assert "shape mismatch at Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias: " \
           "checkpoint (7,), model (32,)" in str(e.value)


# ------------------------------------------------------------------------- name table
def test_table_entries_agree_with_their_file_names():
    for name, release in pretrained.RELEASES.items():
        assert release.url.startswith("https://storage.googleapis.com/") and \
            release.filename.endswith(".npz"), name
        if "augreg" in name:  # e.g. B_16-i21k-300ep-...--imagenet2012-...-res_224.npz
            # Hybrids: "R26+S/32" → R26_S_32-..., "R+Ti/16" → R_Ti_16-...
            stem = release.spec.variant.replace("/", "_").replace("+", "_")
            assert release.filename.startswith(stem + "-"), name
            assert ("_ft_in1k" in name or "augreg_in1k" in name) == \
                (release.spec.num_classes == 1000), name
            assert f"_{release.spec.image_size[0]}." in name
    assert pretrained.lookup("ViT-B_16.npz")[0] == "imagenet21k/ViT-B_16"
    s16 = pretrained.RELEASES["i1k-s16-300ep"]
    assert s16.model_options() == {"variant": "S/16", "classifier": "gap",
                                   "representation_size": 384, "posemb": "sincos2d"}


def test_resolve_a_path_reads_the_options_off_the_file(tmp_path):
    _, params = _big_vision("gap", posemb="sincos2d")
    _save_like_big_vision(tmp_path / "mine.npz", {"params": params})
    path, options = pretrained.resolve(str(tmp_path / "mine.npz"))
    assert path == str(tmp_path / "mine.npz")
    assert options == {"variant": "testing", "classifier": "gap", "representation_size": REP,
                       "posemb": "sincos2d"}


def test_resolve_a_name_finds_the_file_and_checks_it(tmp_path, monkeypatch):
    url = "https://storage.googleapis.com/vit_models/imagenet21k/ViT-testing.npz"
    monkeypatch.setitem(pretrained.RELEASES, "imagenet21k/ViT-testing", pretrained.Release(
        url, ViTSpec.from_variant("testing", num_classes=CLASSES, image_size=IMAGE,
                                  representation_size=REP)))
    _, params = _released_params()
    (tmp_path / "imagenet21k").mkdir()
    checkpoint.save_npz(tmp_path / "imagenet21k" / "ViT-testing.npz", params)
    path, options = pretrained.resolve("imagenet21k/ViT-testing", [tmp_path / "x", tmp_path])
    assert path == str(tmp_path / "imagenet21k" / "ViT-testing.npz")
    assert options == {"variant": "testing", "classifier": "token", "representation_size": REP}
    # The same file name holding another model (here: no pre_logits, 3 classes) is refused.
    other = models.create_model("testing", num_classes=3)
    (tmp_path / "imagenet21k" / "ViT-testing.npz").unlink()
    checkpoint.save_npz(tmp_path / "ViT-testing.npz", _random_params(other, seed=7))
    with pytest.raises(CheckpointError, match=r"ViT-testing\.npz was found for "
                       r"imagenet21k/ViT-testing but holds another model: num_classes=3 "
                       r"\(expected 5\), representation_size=None \(expected 16\)"):
        pretrained.resolve("imagenet21k/ViT-testing", [tmp_path])


@pytest.mark.parametrize("name, file, url", [
    ("vit_base_patch16_224.augreg_in21k_ft_in1k",
     "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01"
     "-res_224.npz", "https://storage.googleapis.com/vit_models/augreg/"),
    ("ViT-B_16.npz", "ViT-B_16.npz", "https://storage.googleapis.com/vit_models/imagenet21k/"),
    ("i1k-s16-300ep", "vit_s16_i1k_300ep.npz", "https://storage.googleapis.com/big_vision/"),
])
def test_resolve_offline_names_the_file_url_and_where_to_put_it(tmp_path, monkeypatch, name,
                                                                file, url):
    monkeypatch.setenv("VIT_JAX_OFFLINE", "1")
    monkeypatch.setenv("VIT_JAX_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError) as e:
        pretrained.resolve(name, [tmp_path])
    message = str(e.value)
    dest = tmp_path / "cache" / url.removeprefix("https://storage.googleapis.com/") / file
    assert "\n" not in message and message.startswith(f"{pretrained.lookup(name)[0]}: ")
    assert message.endswith(f"download {url}{file} and put it at {dest}.")
    # A path that does not exist is not downloaded even when its file name is a name.
    with pytest.raises(CheckpointError, match=f"Checkpoint file not found: /nowhere/{name} "
                       r"\(its file name is that of the released .*: pass the name alone"):
        pretrained.resolve(f"/nowhere/{name}")


def test_resolve_unknown_name():
    with pytest.raises(CheckpointError, match="Checkpoint file not found: no-such-model"):
        pretrained.resolve("no-such-model")
