"""vit_jax.data.randaugment: each op against PIL, the magnitudes, the randomness, the pipeline.

PIL is the reference the TF ops were written to reproduce (the RandAugment paper's ops are
PIL's). Tolerances are in grey levels (uint8) and stated per case:
  * 0 for every op but shear: the pixel arithmetic is PIL's (integer luma, rounding of the
    smoothed image, truncation in blend, float64 autocontrast table) and the geometry puts
    pixel centres where PIL does, with the same nearest-neighbour choice.
  * shear: PIL's AFFINE (1, s, 0, 0, 1, 0) shears about the image corner, the TF op (as
    the TF reference) about the first pixel's centre, so the two sample points differ by
    s/2 px and a nearest-neighbour pick may land on the adjacent pixel. Checked as: every
    pixel equals PIL's pixel at the same place or one step along the shear axis; the mean
    |diff| is below 1 grey level; the max |diff| is at most the largest step between
    adjacent pixels along that axis.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from conftest import tiny_digits_config
from vit_core.errors import ConfigError
from vit_jax.data import input_pipeline, randaugment

GREY = (randaugment.FILL_VALUE,) * 3


def photo(height: int = 48, width: int = 64) -> np.ndarray:
    """A fixed photo-like uint8 (H, W, 3) image: gradients, waves and one sharp rectangle.

    Not square (a swapped axis shows), no channel spans 0..255 (autocontrast has work to do).
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 30 + 150 * x / width + 25 * np.sin(y / 5.0)
    g = 60 + 120 * y / height + 20 * np.cos(x / 7.0 + y / 9.0)
    b = 100 + 60 * np.sin((x + 2 * y) / 11.0)
    image = np.stack([r, g, b], -1)
    image[10:20, 30:45] = (200, 40, 90)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


IMAGE = photo()


def _diff(ours, theirs) -> np.ndarray:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape and ours.dtype == np.uint8
    return np.abs(ours.astype(np.int32) - theirs.astype(np.int32))


def _affine(matrix):
    return lambda im: im.transform(im.size, Image.AFFINE, matrix, Image.NEAREST, fillcolor=GREY)


# (id, our op, PIL's op): all must agree exactly (tolerance 0, see the module docstring).
EXACT_CASES = [
    ("autocontrast", randaugment.autocontrast, ImageOps.autocontrast),
    ("equalize", randaugment.equalize, ImageOps.equalize),
    *[(f"solarize_{t}", lambda im, t=t: randaugment.solarize(im, t),
       lambda im, t=t: ImageOps.solarize(im, t)) for t in (0, 100, 128, 256)],
    *[(f"posterize_{b}", lambda im, b=b: randaugment.posterize(im, b),
       lambda im, b=b: ImageOps.posterize(im, b)) for b in (1, 2, 4, 8)],
    *[(f"{name}_{f}", lambda im, op=op, f=f: op(im, f),
       lambda im, enhancer=enhancer, f=f: enhancer(im).enhance(f))
      for name, op, enhancer in [
          ("color", randaugment.color, ImageEnhance.Color),
          ("contrast", randaugment.contrast, ImageEnhance.Contrast),
          ("brightness", randaugment.brightness, ImageEnhance.Brightness),
          ("sharpness", randaugment.sharpness, ImageEnhance.Sharpness)]
      for f in (0.1, 0.55, 1.0, 1.9, 2.8)],
    *[(f"rotate_{d}", lambda im, d=d: randaugment.rotate(im, d),
       lambda im, d=d: im.rotate(d, resample=Image.NEAREST, fillcolor=GREY))
      for d in (30.0, -30.0, 17.0, 9.0)],
    *[(f"translate_x_{p}", lambda im, p=p: randaugment.translate_x(im, p),
       _affine((1, 0, p, 0, 1, 0))) for p in (10.0, -7.0, 3.4)],
    *[(f"translate_y_{p}", lambda im, p=p: randaugment.translate_y(im, p),
       _affine((1, 0, 0, 0, 1, p))) for p in (10.0, -7.0, 3.4)],
]


@pytest.mark.parametrize("ours, theirs", [c[1:] for c in EXACT_CASES],
                         ids=[c[0] for c in EXACT_CASES])
def test_op_equals_pil(ours, theirs):
    expected = np.asarray(theirs(Image.fromarray(IMAGE)))
    diff = _diff(ours(tf.constant(IMAGE)), expected)
    assert diff.max() == 0 and diff.mean() == 0.0, (diff.mean(), diff.max())


@pytest.mark.parametrize("axis", ["x", "y"])
@pytest.mark.parametrize("factor", [0.3, -0.3, 0.17])
def test_shear_equals_pil_up_to_the_half_pixel_origin(axis, factor):
    ours = getattr(randaugment, f"shear_{axis}")(tf.constant(IMAGE), factor).numpy()
    matrix = (1, factor, 0, 0, 1, 0) if axis == "x" else (1, 0, 0, factor, 1, 0)
    theirs = np.asarray(_affine(matrix)(Image.fromarray(IMAGE)))
    diff = _diff(ours, theirs)
    along = 1 if axis == "x" else 0  # the shear moves pixels along this array axis
    steps = np.abs(np.diff(theirs.astype(np.int32), axis=along))
    assert diff.mean() < 1.0, diff.mean()
    assert diff.max() <= steps.max(), (diff.max(), steps.max())
    # Each pixel is PIL's pixel at the same place or one step along the shear axis.
    padded = np.pad(theirs.astype(np.int32), [(1, 1) if a == along else (0, 0) for a in range(3)],
                    constant_values=-1)  # -1 matches no pixel
    n = theirs.shape[along]
    neighbours = [np.take(padded, np.arange(k, k + n), axis=along) for k in (0, 1, 2)]
    same = np.any([ours == nb for nb in neighbours], axis=0)
    inner = np.take(same, np.arange(1, n - 1), axis=along)  # an edge's neighbour is off-image
    assert inner.all(), np.argwhere(~inner)[:5]


def test_magnitudes_follow_the_reference():
    # tensorflow/models & big_vision autoaugment.py, level_to_arg at level = M / 10.
    for m in (0.0, 5.0, 10.0, 15.0):
        level = m / 10
        assert randaugment.op_argument("rotate", m) == pytest.approx(30 * level)
        assert randaugment.op_argument("shear_x", m) == pytest.approx(0.3 * level)
        assert randaugment.op_argument("shear_y", m) == pytest.approx(0.3 * level)
        for name in ("color", "contrast", "brightness", "sharpness"):
            assert randaugment.op_argument(name, m) == pytest.approx(0.1 + 1.8 * level)
        # int(4 * level) bits; the reference's 0 (TF clamps the shift 8 to 7) keeps 1 bit.
        assert randaugment.op_argument("posterize", m) == max(int(4 * level), 1)
        assert randaugment.op_argument("solarize", m) == int(256 * level)
        # The reference's 100 px (translate_const) at 224 px, as a fraction of the side.
        assert randaugment.op_argument("translate_x", m) * 224 == pytest.approx(100 * level)
        for name in ("identity", "autocontrast", "equalize"):
            assert randaugment.op_argument(name, m) is None
    assert randaugment.op_argument("posterize", 30.0) == 8  # capped: 12 bits do not exist


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_apply_op_passes_the_magnitude_and_sign(sign):
    image = tf.constant(IMAGE)
    height, width = IMAGE.shape[:2]
    pairs = {
        "rotate": randaugment.rotate(image, sign * 21.0),
        "shear_x": randaugment.shear_x(image, sign * 0.21),
        "shear_y": randaugment.shear_y(image, sign * 0.21),
        "translate_x": randaugment.translate_x(image, sign * 0.7 * 100 / 224 * width),
        "translate_y": randaugment.translate_y(image, sign * 0.7 * 100 / 224 * height),
        "color": randaugment.color(image, 1.36),
        "posterize": randaugment.posterize(image, 2),
        "solarize": randaugment.solarize(image, 179),
    }
    for name, expected in pairs.items():
        got = randaugment.apply_op(image, name, 7.0, sign)
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("shape", [(48, 64, 3), (8, 8, 3)], ids=["48x64", "8x8"])
@pytest.mark.parametrize("name", randaugment.OPS)
def test_every_op_keeps_shape_and_dtype(name, shape):
    image = tf.constant(photo(*shape[:2]))
    for magnitude in (0.0, 5.0, 10.0, 30.0):
        for sign in (1.0, -1.0):
            out = randaugment.apply_op(image, name, magnitude, sign)
            assert out.shape == shape and out.dtype == tf.uint8, (magnitude, sign)


def test_randaugment_is_a_function_of_the_seed():
    image = tf.constant(IMAGE)
    traced = tf.function(lambda s: randaugment.randaugment(image, s, 2, 10.0))  # traced once
    seeds = [tf.constant([3, k], tf.int64) for k in range(12)]
    outputs = [traced(s).numpy() for s in seeds]
    np.testing.assert_array_equal(traced(seeds[0]), outputs[0])  # the same seed, again
    np.testing.assert_array_equal(randaugment.randaugment(image, seeds[0], 2, 10.0), outputs[0])
    distinct = {o.tobytes() for o in outputs}
    # 12 seeds, 14 ops per layer: equal outputs need equal (or no-op) draws, which is rare.
    assert len(distinct) >= 9, len(distinct)
    assert all(o.shape == IMAGE.shape and o.dtype == np.uint8 for o in outputs)
    with pytest.raises(ValueError, match="uint8"):
        randaugment.randaugment(tf.cast(image, tf.float32), seeds[0], 2, 10.0)


def test_ops_and_signs_are_uniform():
    draws = 14 * 200
    ops, signs = randaugment.sample_layers(tf.constant([0, 1], tf.int64), draws)
    counts = np.bincount(ops.numpy(), minlength=len(randaugment.OPS))
    assert len(counts) == len(randaugment.OPS)  # never an index past the last op
    assert counts.min() >= 150 and counts.max() <= 250, counts  # 200 ± 3.6 sigma
    assert set(np.unique(signs)) == {-1.0, 1.0}
    assert abs(float(np.mean(signs))) < 0.07  # 1/sqrt(2800) = 0.019 per sigma


@pytest.mark.parametrize("value", [(2, 10), (0, 0), [1, 9.5], (3, 30)])
def test_check_config_accepts(value):
    assert randaugment.check_config(value) == (int(value[0]), float(value[1]))


@pytest.mark.parametrize("value", [(2,), 2, (-1, 10), (2, 31), (2, -1), (1.5, 10), (True, 10),
                                   ("2", 10), (2, 10, 1)])
def test_check_config_refuses(value):
    with pytest.raises(ConfigError, match=r"config\.randaugment must be \(num_layers, magnitude\)"):
        randaugment.check_config(value)


# ---------------------------------------------------------------------- in the pipeline
def _batches(config, count: int, start_step: int = 0, process_index: int = 0,
             process_count: int = 1) -> list[np.ndarray]:
    it = input_pipeline.create_train_iter(config, global_batch_size=16, start_step=start_step,
                                          process_index=process_index,
                                          process_count=process_count)
    return [next(it)["image"] for _ in range(count)]


@pytest.mark.slow  # two pipelines: 15-35 s on 2 cores shared with other jobs
def test_pipeline_randaugment_is_keyed_on_seed_and_position(digits_dir):
    on = tiny_digits_config(digits_dir, randaugment=(2, 10), image_size=16)
    batches = _batches(on, 3)
    # A fresh iterator resumed at step 2 (another tf.data graph, other threads) agrees.
    np.testing.assert_array_equal(_batches(on, 1, start_step=2)[0], batches[2])
    # Applied on uint8, then scaled: every value is k / 127.5 - 1 for an integer k (without
    # RandAugment the bilinear upscaling of the 8x8 digits leaves fractions).
    levels = (np.stack(batches).astype(np.float64) + 1.0) * 127.5
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    assert batches[0].dtype == np.float32 and batches[0].min() >= -1 and batches[0].max() <= 1
    assert len({b.tobytes() for b in batches}) == 3


@pytest.mark.slow  # three pipelines: ~30 s on 2 cores shared with other jobs
def test_pipeline_randaugment_does_not_depend_on_the_process(digits_dir):
    on = tiny_digits_config(digits_dir, randaugment=(2, 10), image_size=16)
    whole = _batches(on, 1, start_step=1)[0]
    # Two processes: each decodes and augments its own rows, the same as one process does.
    halves = [_batches(on, 1, start_step=1, process_index=p, process_count=2)[0] for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate(halves), whole)


def test_pipeline_refuses_bad_randaugment(digits_dir):
    with pytest.raises(ConfigError, match=r"config\.randaugment must be"):
        _batches(tiny_digits_config(digits_dir, randaugment=(2, 99)), 1)
    with pytest.raises(ConfigError, match=r"config\.augment 'inception_crop' or 'pad_crop'"):
        _batches(tiny_digits_config(digits_dir, randaugment=(1, 5), augment="none"), 1)
