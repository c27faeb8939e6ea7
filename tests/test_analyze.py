"""The paper's figures (vit_jax.analyze): the maths on constructed weights, the model's
attention under every `attention_impl`, and the command end to end on digits."""

from __future__ import annotations

import functools
import itertools
import json
import math
import os

import jax
import numpy as np
import pytest
from PIL import Image

from vit_jax import analyze
from vit_jax.model import vit as models
from vit_jax.tools import analysis
from vit_jax.weights import checkpoint, loading

GRID = (3, 4)
PATCH = 4


def mean_pairwise_distance(grid, patch_size) -> float:
    """Mean over all ordered pairs (self included) of the distance of two patch centres."""
    cells = list(itertools.product(range(grid[0]), range(grid[1])))
    total = sum(math.dist(a, b) for a in cells for b in cells)
    return patch_size * total / len(cells) ** 2


@pytest.mark.parametrize("prefix", [0, 1])
def test_uniform_attention_gives_the_mean_pairwise_distance(prefix):
    t = prefix + GRID[0] * GRID[1]
    weights = np.full((2, 3, t, t), 1.0 / t)  # (B, K, T, T)
    got = analysis.mean_attention_distance(weights, GRID, PATCH, prefix)
    np.testing.assert_allclose(got, [mean_pairwise_distance(GRID, PATCH)] * 3, rtol=1e-12)


@pytest.mark.parametrize("prefix", [0, 1])
def test_attention_to_self_gives_zero(prefix):
    t = prefix + GRID[0] * GRID[1]
    weights = np.broadcast_to(np.eye(t), (2, 5, t, t))
    np.testing.assert_allclose(analysis.mean_attention_distance(weights, GRID, PATCH, prefix),
                               np.zeros(5), atol=1e-12)


def test_attention_to_one_corner_gives_the_mean_distance_to_it():
    n = GRID[0] * GRID[1]
    weights = np.zeros((1, 1, n, n))
    weights[..., 0] = 1.0  # every query looks at patch (0, 0) only
    cells = list(itertools.product(range(GRID[0]), range(GRID[1])))
    expected = PATCH * np.mean([math.dist(c, (0, 0)) for c in cells])
    np.testing.assert_allclose(analysis.mean_attention_distance(weights, GRID, PATCH),
                               [expected], rtol=1e-12)


def test_orthogonal_position_embeddings_give_a_diagonal_similarity():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(16, 16)))
    posemb = q[:12] * np.arange(1, 13)[:, None]  # orthogonal rows of different lengths
    np.testing.assert_allclose(analysis.cosine_similarity(posemb), np.eye(12), atol=1e-12)


def test_components_of_filters_spread_along_two_known_directions():
    rng = np.random.default_rng(0)
    p, c, d = 2, 3, 200
    basis, _ = np.linalg.qr(rng.normal(size=(p * p * c, 2)))  # u, v orthonormal
    coeffs = rng.normal(size=(d, 2)) * [5.0, 1.0]  # far more spread along u than v
    filters = coeffs @ basis.T + 1e-4 * rng.normal(size=(d, p * p * c)) + 3.0  # + a mean
    kernel = filters.T.reshape(p, p, c, d)
    components, explained = analysis.patch_embedding_components(kernel, num=5)
    flat = components.reshape(5, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(5), atol=1e-9)
    assert abs(flat[0] @ basis[:, 0]) > 0.999 and abs(flat[1] @ basis[:, 1]) > 0.999
    var = coeffs.var(axis=0)
    assert explained[0] == pytest.approx(var[0] / var.sum(), rel=1e-3)
    assert explained[:2].sum() == pytest.approx(1.0, abs=1e-6)


@functools.lru_cache
def tiny_params(**options):
    """Parameters of the tiny model, initialised once (a jitted init: seconds, not tens)."""
    model = models.create_model("testing", num_classes=10, patch_size=4, **options)
    init = jax.jit(lambda x: model.init(jax.random.key(0), x)["params"])
    return jax.device_get(init(np.zeros((1, 8, 8, 3), np.float32)))


def tiny_model(attention_impl=None, **options):
    model = models.create_model("testing", num_classes=10, patch_size=4, **options)
    params = tiny_params(**options)
    # Initialised with the default attention: "cudnn" cannot run on a CPU, but its
    # checkpoints can be analysed there.
    model = model.clone(attention_impl=attention_impl)
    return loading.LoadedModel(model, params, 8, None, None)


def block0_attention(params, model, images):
    """softmax(q·kᵀ/√Dh) of the first block, from the parameters, in numpy (float64)."""
    p = {k: np.asarray(v, np.float64) for k, v in _flat(params).items()}
    kernel = p["embedding/kernel"].reshape(-1, model.spec.hidden_size)
    b, s = images.shape[:2]
    g = s // 4
    x = images.reshape(b, g, 4, g, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, -1)
    x = x @ kernel + p["embedding/bias"]
    x = np.concatenate([np.broadcast_to(p["cls"], (b, 1, x.shape[-1])), x], axis=1)
    x = x + p["Transformer/posembed_input/pos_embedding"]
    blk = "Transformer/encoderblock_0/"
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + 1e-6) * p[blk + "LayerNorm_0/scale"] + p[blk + "LayerNorm_0/bias"]
    att = blk + "MultiHeadDotProductAttention_1/"
    q = np.einsum("btd,dkh->btkh", y, p[att + "query/kernel"]) + p[att + "query/bias"]
    k = np.einsum("btd,dkh->btkh", y, p[att + "key/kernel"]) + p[att + "key/bias"]
    logits = np.einsum("bqkh,bvkh->bkqv", q, k) / np.sqrt(q.shape[-1])
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("impl", [None, "xla", "cudnn"])
def test_attention_weights_come_from_q_and_k_for_every_implementation(impl):
    loaded = tiny_model(attention_impl=impl)
    images = np.random.default_rng(0).uniform(-1, 1, size=(2, 8, 8, 3)).astype(np.float32)
    logits, attn = analysis.attention_weights(loaded, images)
    assert len(attn) == 2 and attn[0].shape == (2, 4, 5, 5)
    np.testing.assert_allclose(attn[0], block0_attention(loaded.params, loaded.model, images),
                               atol=1e-5)
    plain = jax.jit(loaded.model.clone(attention_impl=None).apply)({"params": loaded.params},
                                                                    images)
    np.testing.assert_allclose(logits, np.asarray(plain), atol=1e-5)
    # The figures' numbers are those of the default implementation.
    reference = analysis.attention_distances(tiny_model(), images)
    np.testing.assert_allclose(analysis.attention_distances(loaded, images), reference,
                               atol=1e-5)


def test_sincos_posemb_similarity_is_the_tables():
    from vit_core.posemb import sincos_2d

    model = models.create_model("testing", num_classes=10, patch_size=4, posemb="sincos2d")
    loaded = loading.LoadedModel(model, {}, 8, None, None)  # the table needs no parameter
    np.testing.assert_array_equal(analysis.position_embeddings(loaded), sincos_2d(2, 2, 32)[0])
    learned = tiny_model()  # a class token: its row is not a patch's
    table = np.asarray(learned.params["Transformer"]["posembed_input"]["pos_embedding"])[0]
    np.testing.assert_array_equal(analysis.position_embeddings(learned), table[1:])


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    loaded = tiny_model()
    path = str(tmp_path_factory.mktemp("npz") / "tiny.npz")
    checkpoint.save_npz(path, loaded.params)
    return path


def png_size(path):
    with Image.open(path) as image:
        return image.size


def test_analyze_with_a_dataset_writes_every_figure(digits_dir, tiny_npz, tmp_path):
    out = str(tmp_path / "figs")
    result = analysis.analyze(tiny_npz, out, dataset="digits", split="test", num_images=6,
                             num_maps=2, data_dir=digits_dir)
    assert result["files"] == ["patch_embedding_pca.png", "posemb_similarity.png",
                               "attention_distance.png", "attention_maps.png"]
    assert all(png_size(os.path.join(out, f))[0] > 100 for f in result["files"])
    with open(os.path.join(out, "analysis.json")) as f:
        saved = json.load(f)
    assert saved["num_images"] == 6 and np.asarray(saved["attention_distance_px"]).shape == (2, 4)
    assert len(saved["pca_explained_variance"]) == 28  # 4·4·3 = 48 ≥ 28 pixels, 32 filters
    assert png_size(os.path.join(out, "attention_maps.png"))[1] == 2 * (160 + 22)  # 2 rows


def test_analyze_with_image_files_and_without_images(tiny_npz, tmp_path, capsys):
    image = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 12), np.uint8)).save(image)
    result = analysis.analyze(tiny_npz, str(tmp_path / "a"), [str(image), str(image)])
    assert result["num_images"] == 2 and "attention_maps.png" in result["files"]
    assert "attention: 2/2 images" in capsys.readouterr().err  # progress
    bare = analysis.analyze(tiny_npz, str(tmp_path / "b"))
    assert bare["files"] == ["patch_embedding_pca.png", "posemb_similarity.png"]
    assert "the attention figures need images" in capsys.readouterr().err


@pytest.mark.parametrize("args, fragment", [
    (["IMG", "--dataset", "digits"], "Give image files or --dataset, not both"),
    (["missing.png"], "No image file at missing.png"),
    (["--num_images", "0"], "--num_images must be ≥ 1"),
    (["--out_is_file"], "is a file; give a folder"),
    (["--checkpoint_missing"], "No checkpoint at"),
])
def test_cli_mistakes_are_one_error_line(tiny_npz, tmp_path, capsys, args, fragment):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    out, ckpt = str(tmp_path / "out"), tiny_npz
    if "--out_is_file" in args:
        args, out = [], str(image)
    if "--checkpoint_missing" in args:
        args, ckpt = [], str(tmp_path / "none.npz")
    args = [str(image) if a == "IMG" else a for a in args]
    with pytest.raises(SystemExit) as exit_info:
        analyze.main(["--checkpoint", ckpt, "--out", out, *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
