"""vit_jax.model.vit: shapes, options, variants and the clear errors of bad input."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_core import npz, posemb
from vit_core.errors import ConfigError
from vit_core.variants import decode_variant
from vit_jax.model import vit as models
from vit_jax.weights import checkpoint

# Parameter counts of the released 1000-class models (timm / official), 224² input.
RELEASED_COUNTS = {
    "Ti/16": 5_717_416,
    "S/16": 22_050_664,
    "S/32": 22_878_952,
    "B/8": 86_576_872,
    "B/16": 86_567_656,
    "B/32": 88_224_232,
    "L/16": 304_326_632,
    "L/32": 306_535_400,
    "H/14": 632_045_800,
}


def _randomize(params, seed=3):
    """Adds noise to every parameter: the zero-initialised head and class token included,
    or logits comparisons would prove nothing."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, noisy)


def _init(model, size=32, seed=0):
    images = jax.random.normal(jax.random.key(seed + 1), (2, size, size, 3))
    return model.init(jax.random.key(seed), images)["params"], images


@pytest.mark.parametrize("variant", sorted(RELEASED_COUNTS))
def test_parameter_count_equals_released_model(variant):
    model = models.create_model(variant, num_classes=1000)
    assert models.count_params(models.param_shapes(model, 224)) == RELEASED_COUNTS[variant]


def test_released_21k_layout_with_representation():
    # ViT-B/16 ImageNet-21k: 21843 classes and a 768-wide pre-logits layer.
    model = models.create_model("B/16", num_classes=21843, representation_size=768)
    shapes = npz.flatten(models.param_shapes(model, 224))
    assert shapes["pre_logits/kernel"].shape == (768, 768)
    assert shapes["head/kernel"].shape == (768, 21843)
    assert shapes["Transformer/posembed_input/pos_embedding"].shape == (1, 197, 768)
    assert shapes["Transformer/encoderblock_11/MultiHeadDotProductAttention_1/query/kernel"].shape \
        == (768, 12, 64)
    assert shapes["embedding/kernel"].shape == (16, 16, 3, 768)


def test_forward_shapes_and_features():
    model = models.create_model("testing", num_classes=7)
    params, images = _init(model)
    logits, feats = model.apply({"params": params}, images, return_features=True)
    chex.assert_shape(logits, (2, 7))
    assert logits.dtype == jnp.float32
    chex.assert_shape(feats["embedded"], (2, 65, 32))  # 8x8 patches + class token
    chex.assert_shape([feats["block_0"], feats["block_1"], feats["encoded"]], (2, 65, 32))
    chex.assert_shape(feats["pre_logits"], (2, 32))


def test_gap_has_no_class_token_and_pools_after_norm():
    model = models.create_model("testing", num_classes=3, classifier="gap")
    params, images = _init(model)
    assert "cls" not in params
    _, feats = model.apply({"params": params}, images, return_features=True)
    chex.assert_shape(feats["encoded"], (2, 64, 32))
    np.testing.assert_allclose(feats["pre_logits"], feats["encoded"].mean(axis=1), rtol=1e-6)


def test_representation_layer_is_dense_tanh():
    model = models.create_model("testing", num_classes=3, representation_size=16)
    params, images = _init(model)
    _, feats = model.apply({"params": params}, images, return_features=True)
    pooled = feats["encoded"][:, 0]
    expected = jnp.tanh(pooled @ params["pre_logits"]["kernel"] + params["pre_logits"]["bias"])
    np.testing.assert_allclose(feats["pre_logits"], expected, rtol=1e-5, atol=1e-6)


def test_patch_embedding_equals_strided_convolution():
    model = models.create_model("testing", num_classes=3)
    params, images = _init(model)
    _, feats = model.apply({"params": params}, images, return_features=True)
    kernel, bias = params["embedding"]["kernel"], params["embedding"]["bias"]
    conv = jax.lax.conv_general_dilated(
        images, kernel, (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    ) + bias  # (B, 8, 8, D)
    np.testing.assert_allclose(feats["embedded"][:, 1:], conv.reshape(2, 64, 32), atol=1e-5)


def test_scan_and_remat_compute_the_same_function():
    base = models.create_model("testing", num_classes=5)
    params, images = _init(base)
    # Give the zero-initialised head and class token values so logits mean something.
    params = _randomize(params)
    expected = base.apply({"params": params}, images)
    stacked = checkpoint.npz_dict_to_params(checkpoint.params_to_npz_dict(params), scan=True)
    for kwargs, p in [({"scan": True}, stacked), ({"remat": True}, params),
                      ({"scan": True, "remat": True}, stacked)]:
        got = models.create_model("testing", num_classes=5, **kwargs).apply({"params": p}, images)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=str(kwargs))


def test_explicit_attention_path_matches_fused_and_rows_sum_to_one():
    model = models.create_model("testing", num_classes=5)
    params, images = _init(model)
    params = _randomize(params)
    fused = model.apply({"params": params}, images)
    explicit, feats = model.apply(
        {"params": params}, images, return_features=True, return_attention=True
    )
    np.testing.assert_allclose(explicit, fused, rtol=1e-5, atol=1e-6)
    chex.assert_shape(feats["attention_1"], (2, 4, 65, 65))
    np.testing.assert_allclose(feats["attention_1"].sum(-1), 1.0, rtol=1e-5)


def test_gelu_default_is_tanh_approximation():
    assert models.create_model("testing", num_classes=2).spec.gelu_approximate is True
    params, images = _init(models.create_model("testing", num_classes=2))
    params = _randomize(params)
    approx = models.create_model("testing", num_classes=2).apply({"params": params}, images)
    exact = models.create_model("testing", num_classes=2, gelu_approximate=False).apply(
        {"params": params}, images)
    assert np.abs(approx - exact).max() > 1e-4


def test_bf16_compute_keeps_float32_params():
    model = models.create_model("testing", num_classes=5, dtype=jnp.bfloat16)
    params, images = _init(model)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    logits = model.apply({"params": params}, images)
    assert logits.dtype == jnp.float32


def test_dropout_and_stochastic_depth_only_in_training():
    model = models.create_model(
        "testing", num_classes=5, dropout_rate=0.1, attention_dropout_rate=0.1,
        stochastic_depth=0.5)
    params, images = _init(model)
    params = _randomize(params)
    eval_a = model.apply({"params": params}, images)
    eval_b = model.apply({"params": params}, images)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a = model.apply({"params": params}, images, train=True,
                          rngs={"dropout": jax.random.key(1)})
    train_b = model.apply({"params": params}, images, train=True,
                          rngs={"dropout": jax.random.key(2)})
    assert np.abs(train_a - train_b).max() > 1e-3


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 30, 32, 3), "not divisible by the patch size"),
     ((2, 32, 32, 1), "3 colour channels"),
     ((32, 32, 3), "Expected images of shape")],
)
def test_bad_images_give_clear_errors(shape, message):
    model = models.create_model("testing", num_classes=2)
    with pytest.raises(ValueError, match=message):
        model.init(jax.random.key(0), jnp.zeros(shape))


def test_position_embedding_size_mismatch_is_explained():
    model = models.create_model("testing", num_classes=2)
    params, _ = _init(model, size=32)
    with pytest.raises(ValueError, match="resize_posemb"):
        model.apply({"params": params}, jnp.zeros((1, 48, 48, 3)))


def test_unknown_variant_and_option():
    with pytest.raises(ValueError, match=r"Unknown ViT variant 'B/15'.*'B/16'"):
        models.create_model("B/15", num_classes=2)
    with pytest.raises(ConfigError, match="hidden_sise"):
        models.create_model("testing", num_classes=2, hidden_sise=3)


# ------------------------------------------------ options: posemb sincos2d, classifier map
def _big_vision_posemb_sincos_2d(h, w, width, temperature=10_000.0):
    """big_vision `models/vit.py` `posemb_sincos_2d`, transcribed in jnp (float32)."""
    y, x = jnp.mgrid[:h, :w]
    omega = jnp.arange(width // 4) / (width // 4 - 1)
    omega = 1.0 / (temperature**omega)
    y = jnp.einsum("m,d->md", y.flatten(), omega)
    x = jnp.einsum("m,d->md", x.flatten(), omega)
    pe = jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)
    return jnp.asarray(pe, jnp.float32)[None, :, :]


@pytest.mark.parametrize(("h", "w", "width"), [(14, 14, 768), (3, 5, 32), (24, 24, 384)])
def test_sincos_table_is_big_vision_s(h, w, width):
    """The numpy table both frameworks add equals big_vision's jnp formula to float32
    round-off: the arguments x·ω reach h − 1, whose float32 ulp (≤ 2^-19 for h ≤ 24) the
    two pow/sin/cos implementations may round differently; 4 of those ulps allowed."""
    table = posemb.sincos_2d(h, w, width)
    want = _big_vision_posemb_sincos_2d(h, w, width)
    assert table.shape == want.shape == (1, h * w, width) and table.dtype == np.float32
    ulp = np.spacing(np.float32(max(h, w)))
    np.testing.assert_allclose(table, want, rtol=0, atol=4 * ulp)
    # Token 1 is column 1 of row 0: sin(ω), cos(ω) in the x half, sin(0)=0, cos(0)=1 for y.
    q = width // 4
    np.testing.assert_array_equal(table[0, 1, 2 * q:], np.r_[np.zeros(q), np.ones(q)])


def _learn_twin(variant, **options):
    """(sincos2d model, the same model with a learned posemb) of one variant."""
    fixed = models.create_model(variant, num_classes=3, posemb="sincos2d", **options)
    return fixed, models.create_model(variant, num_classes=3, posemb="learn", **options)


@pytest.mark.parametrize("classifier", ["token", "map"])  # prefix 1 and 0
def test_sincos2d_is_a_fixed_posemb_on_the_patches_only(classifier):
    """Same function as a learned posemb holding [0 (class token); table]: big_vision adds
    the table to the patch tokens before prepending the class token (which has none)."""
    fixed, learned = _learn_twin("testing", classifier=classifier)
    params, images = _init(fixed)
    params = _randomize(params)
    assert "posembed_input" not in params["Transformer"]
    prefix = 1 if classifier == "token" else 0
    table = posemb.sincos_2d(8, 8, 32)  # 32² images, 4² patches
    learned_params = {**params, "Transformer": {
        **params["Transformer"],
        "posembed_input": {"pos_embedding": np.pad(table, ((0, 0), (prefix, 0), (0, 0)))}}}
    # Jitted: one compilation each instead of op-by-op dispatch (~4x faster here).
    run_fixed, run_learned = (jax.jit(m.apply) for m in (fixed, learned))
    np.testing.assert_allclose(run_fixed({"params": params}, images),
                               run_learned({"params": learned_params}, images),
                               rtol=1e-6, atol=1e-6)
    # No parameter fixes the grid: any image size whose sides are multiples of P.
    chex.assert_shape(run_fixed({"params": params}, jnp.zeros((1, 48, 24, 3))), (1, 3))


def _map_head_reference(p, tokens, num_heads):
    """big_vision's MAPHead written out: probe attends over the tokens, x + MLP(LN(x))."""
    attn = p["MultiHeadDotProductAttention_0"]
    b, _, d = tokens.shape
    q = jnp.einsum("bnd,dkh->bnkh", jnp.broadcast_to(p["probe"], (b, 1, d)),
                   attn["query"]["kernel"]) + attn["query"]["bias"]  # (B, 1, K, Dh)
    k = jnp.einsum("bnd,dkh->bnkh", tokens, attn["key"]["kernel"]) + attn["key"]["bias"]
    v = jnp.einsum("bnd,dkh->bnkh", tokens, attn["value"]["kernel"]) + attn["value"]["bias"]
    w = jax.nn.softmax(jnp.einsum("bqkh,bvkh->bkqv", q, k) / np.sqrt(d // num_heads))
    y = jnp.einsum("bkqv,bvkh->bqkh", w, v)  # (B, 1, K, Dh)
    y = jnp.einsum("bqkh,khd->bqd", y, attn["out"]["kernel"]) + attn["out"]["bias"]  # (B, 1, D)
    ln = p["LayerNorm_0"]
    mu, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
    z = (y - mu) / jnp.sqrt(var + 1e-6) * ln["scale"] + ln["bias"]
    mlp = p["MlpBlock_0"]
    z = jax.nn.gelu(z @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"], approximate=True)
    return (y + z @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"])[:, 0]  # (B, D)


def test_map_head_is_big_vision_attention_pooling():
    model = models.create_model("testing", num_classes=3, classifier="map")
    params, images = _init(model)
    params = _randomize(params)
    assert "cls" not in params  # big_vision: a class token only with pool_type "tok"
    _, feats = model.apply({"params": params}, images, return_features=True)
    chex.assert_shape(feats["encoded"], (2, 64, 32))
    want = _map_head_reference(params["MAPHead_0"], feats["encoded"], num_heads=4)
    np.testing.assert_allclose(feats["pre_logits"], want, rtol=1e-5, atol=1e-5)


def _map_head_count(d, mlp):
    """big_vision MAPHead: probe D; q, k, v, out 4·(D·D + D); LayerNorm 2D; MLP D·mlp + mlp
    + mlp·D + D (the variant's mlp_dim, as big_vision passes it)."""
    return d + 4 * (d * d + d) + 2 * d + 2 * d * mlp + mlp + d


@pytest.mark.parametrize("variant", ["Ti/16", "B/16"])
def test_option_parameter_counts_follow_big_vision(variant):
    """Shapes only (`jax.eval_shape`): nothing is allocated."""
    spec = decode_variant(variant)
    d, tokens = spec.hidden_size, (224 // spec.patch_size) ** 2

    def count(**options):
        model = models.create_model(variant, num_classes=1000, **options)
        return models.count_params(models.param_shapes(model, 224))

    token = RELEASED_COUNTS[variant]
    gap = token - d - d  # no class token, one posemb row fewer
    assert count(classifier="gap") == gap
    assert count(posemb="sincos2d") == token - (1 + tokens) * d  # no posemb parameter
    assert count(classifier="map") == gap + _map_head_count(d, spec.mlp_dim)
    assert count(classifier="map", posemb="sincos2d") == (
        gap - tokens * d + _map_head_count(d, spec.mlp_dim))


def test_map_head_keys_are_big_vision_s():
    model = models.create_model("testing", num_classes=3, classifier="map")
    shapes = {k: v.shape for k, v in npz.flatten(models.param_shapes(model, 32)).items()
              if k.startswith("MAPHead_0/")}
    mha, d, mlp = "MAPHead_0/MultiHeadDotProductAttention_0/", 32, 64
    want = {"MAPHead_0/probe": (1, 1, d), "MAPHead_0/LayerNorm_0/scale": (d,),
            "MAPHead_0/LayerNorm_0/bias": (d,),
            "MAPHead_0/MlpBlock_0/Dense_0/kernel": (d, mlp), "MAPHead_0/MlpBlock_0/Dense_0/bias":
            (mlp,), "MAPHead_0/MlpBlock_0/Dense_1/kernel": (mlp, d),
            "MAPHead_0/MlpBlock_0/Dense_1/bias": (d,), mha + "out/kernel": (4, 8, d),
            mha + "out/bias": (d,)}
    for name in ("query", "key", "value"):
        want |= {f"{mha}{name}/kernel": (d, 4, 8), f"{mha}{name}/bias": (4, 8)}
    assert shapes == want


@pytest.mark.parametrize(("options", "message"), [
    ({"classifier": "tok"}, "classifier must be one of"),
    ({"posemb": "sincos"}, "posemb must be one of"),
    ({"posemb": "sincos2d", "hidden_size": 30, "num_heads": 3}, "multiple of 4"),
])
def test_bad_option_values_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message) as e:  # when the spec is made
        models.create_model("testing", num_classes=2, **options)
    assert "\n" not in str(e.value)


def test_torch_map_head_state_dict_is_timm_s():
    """vit_torch's MAP model is timm's `global_pool="map"` ViT by name and function: its
    state dict loads strictly into timm's and the logits are equal (exact GELU, timm's)."""
    # Imported here: torch and timm are heavy and only this interop check needs them.
    import timm.models.vision_transformer as timm_vit
    import torch

    from vit_torch.model import create_model as create_torch_model

    torch.manual_seed(0)
    ours = create_torch_model("testing", num_classes=5, img_size=32, classifier="map",
                              gelu_approximate=False).eval()
    ours.load_state_dict({k: v + 0.1 * torch.randn_like(v) for k, v in ours.state_dict().items()})
    theirs = timm_vit.VisionTransformer(
        img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
        num_classes=5, class_token=False, global_pool="map",
        norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(theirs(images), ours(images), rtol=1e-6, atol=1e-6)
