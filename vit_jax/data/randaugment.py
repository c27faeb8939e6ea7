"""RandAugment (Cubuk et al. 2019, arXiv:1909.13719) as TensorFlow ops on one uint8 image.

`randaugment(image, seed, num_layers, magnitude)` applies `num_layers` ops, each drawn
uniformly from `OPS` (the paper's 14) and always applied at the one shared `magnitude`
(10 is the reference's strongest level; big_vision also trains with 15, the paper's grid
goes to 30). The input pipeline calls it on the cropped, resized, flipped uint8 image
before scaling pixels to [-1, 1] (`config.randaugment = (num_layers, magnitude)`; 0
layers: off).

Magnitudes follow the TF reference that big_vision and tensorflow/models use
(`autoaugment.py`: `level_to_arg`, `_RANDOM_NEGATE`, `distort_image_with_randaugment`):
with level = magnitude / 10,
  rotate        30 * level degrees, sign random
  shear_x/y     0.3 * level (a shear factor), sign random
  translate_x/y 100/224 * level of the image side, sign random (100 px at 224 px)
  color, contrast, brightness, sharpness: enhancement factor 0.1 + 1.8 * level (no sign)
  posterize     keeps int(4 * level) bits, at least 1 (4 bits at level 1)
  solarize      inverts the pixels >= int(256 * level) (none at level 1)
  (as in the reference, these two get milder as the magnitude grows, and the magnitude
  only ever selects the argument: no random magnitudes)
  identity, autocontrast, equalize: no argument.
Pixels that rotate, shear and translate bring in from outside are grey (128), sampled
nearest-neighbour, as in the reference. Each op equals its PIL namesake (`ImageOps`,
`ImageEnhance`, `Image.rotate`/`transform`; tests/test_randaugment.py measures how far).

Where this differs from the reference, and why:
  * Ops: identity instead of invert, no solarize-add and no cutout: the paper's list.
    Cutout is a separate regulariser (it erases, it does not distort); add it apart if wanted.
  * Translate is a fraction of the image side, not 100 px at any size (timm also uses a
    fraction, 0.45): the same shift at 224 px, and 100 px would empty a 32 px image.
  * Contrast blends towards the image's mean grey level, as PIL does; the reference
    blends towards (pixel count / 256), which is no grey level (a known bug).
  * Grey levels (color, contrast) use PIL's integer luma formula, the smoothed image of
    sharpness is rounded and autocontrast's lookup table is computed in float64, each as
    PIL does (the reference uses TF's float grey weights and truncates, which can be off
    by a grey level).
  * Posterize below magnitude 2.5: the reference asks for 0 bits, and TF clamps its shift
    of 8 to 7, so it keeps 1 bit; we say 1 bit (PIL accepts 1..8).
  * One `tf.switch_case` per layer instead of a chain of 16 `tf.cond`s: only the drawn op runs.

Randomness is stateless: the ops and signs of an image are a pure function of its `seed`
(the input pipeline derives it from config.seed and the example's position in the global
stream), so a resumed run sees bit-identical images.

Importing this module imports TensorFlow (~6 s); `vit_jax.data.input_pipeline` imports it only
when it builds a pipeline.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from vit_core.errors import ConfigError
from vit_jax.data.dataset_info import import_tensorflow

tf = import_tensorflow()

OPS = (
    "identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize",
    "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y",
)
SIGNED_OPS = frozenset({"rotate", "shear_x", "shear_y", "translate_x", "translate_y"})
MAX_LEVEL = 10.0  # magnitude of the reference's strongest setting ("level 10")
MAX_MAGNITUDE = 30.0  # the paper's grid ends here
FILL_VALUE = 128  # grey, for pixels that geometric ops bring in from outside the image
ROTATE_DEGREES = 30.0  # at MAX_LEVEL; likewise below
SHEAR = 0.3
TRANSLATE_FRACTION = 100 / 224  # of the image side (the reference: 100 px, tuned at 224)
ENHANCE_MIN, ENHANCE_RANGE = 0.1, 1.8
POSTERIZE_BITS = 4
SOLARIZE_THRESHOLD = 256
LUMA_WEIGHTS_16 = (19595, 38470, 7471)  # PIL's convert("L"): 0.299 R + 0.587 G + 0.114 B, × 2^16
SMOOTH_KERNEL = ((1.0, 1.0, 1.0), (1.0, 5.0, 1.0), (1.0, 1.0, 1.0))  # PIL ImageFilter.SMOOTH, / 13


def check_config(value: Any) -> tuple[int, float]:
    """Validates config.randaugment.

    Args:
      value: the config value, (num_layers, magnitude).

    Returns:
      (num_layers, magnitude) as (int, float).

    Raises:
      ConfigError: not a pair, num_layers not an int >= 0, or magnitude outside [0, 30].
    """
    ok = isinstance(value, (tuple, list)) and len(value) == 2
    if ok:
        num_layers, magnitude = value
        ok = (isinstance(num_layers, int) and not isinstance(num_layers, bool) and num_layers >= 0
              and isinstance(magnitude, (int, float)) and not isinstance(magnitude, bool)
              and 0 <= magnitude <= MAX_MAGNITUDE)
    if not ok:
        raise ConfigError(
            f"config.randaugment must be (num_layers, magnitude) with an int num_layers >= 0 "
            f"(0: off) and 0 <= magnitude <= {MAX_MAGNITUDE:g}, e.g. (2, 10); got {value!r}.")
    return int(value[0]), float(value[1])


def op_argument(name: str, magnitude: float) -> float | int | None:
    """The argument of op `name` at `magnitude`, before the random sign of the signed ops.

    Args:
      name: one of OPS.
      magnitude: the shared RandAugment magnitude (10 = the reference's strongest level).

    Returns:
      degrees (rotate), shear factor, fraction of the image side (translate), enhancement
      factor (color, contrast, brightness, sharpness), bits kept (posterize), threshold
      (solarize), or None for the ops without an argument.
    """
    level = magnitude / MAX_LEVEL
    if name in ("identity", "autocontrast", "equalize"):
        return None
    if name == "rotate":
        return ROTATE_DEGREES * level
    if name in ("shear_x", "shear_y"):
        return SHEAR * level
    if name in ("translate_x", "translate_y"):
        return TRANSLATE_FRACTION * level
    if name in ("color", "contrast", "brightness", "sharpness"):
        return ENHANCE_MIN + ENHANCE_RANGE * level
    if name == "posterize":  # 1 below magnitude 2.5, all 8 bits from magnitude 20 on
        return min(max(int(POSTERIZE_BITS * level), 1), 8)
    if name == "solarize":
        return int(SOLARIZE_THRESHOLD * level)
    raise ValueError(f"Unknown RandAugment op {name!r}; known: {OPS}.")


def randaugment(image: Any, seed: Any, num_layers: int, magnitude: float) -> Any:
    """Applies `num_layers` random ops of OPS at `magnitude`, keyed on `seed`.

    Args:
      image: uint8 (H, W, 3).
      seed: int32/int64 (2,), a stateless seed; the same seed gives the same ops and signs.
      num_layers: ops applied one after the other (the paper's N).
      magnitude: their shared strength (the paper's M; see the module docstring).

    Returns:
      uint8 (H, W, 3).
    """
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"RandAugment works on uint8 images, got {image.dtype.name}.")
    ops, signs = sample_layers(seed, num_layers)  # (N,), (N,)
    for layer in range(num_layers):
        branches = [functools.partial(apply_op, image, name, magnitude, signs[layer])
                    for name in OPS]
        image = tf.ensure_shape(tf.switch_case(ops[layer], branches), image.shape)
    return image


def sample_layers(seed: Any, num_layers: int) -> tuple[Any, Any]:
    """The ops and signs RandAugment draws for `seed`.

    Args:
      seed: int32/int64 (2,), a stateless seed.
      num_layers: how many (op, sign) pairs.

    Returns:
      int32 (num_layers,) indices into OPS, uniform; float32 (num_layers,) of ±1, each
      sign with probability 1/2 (used by the SIGNED_OPS only).
    """
    op_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    ops = tf.random.stateless_uniform([num_layers], op_seed, 0, len(OPS), dtype=tf.int32)
    coins = tf.random.stateless_uniform([num_layers], sign_seed)  # (N,) in [0, 1)
    return ops, tf.where(coins < 0.5, -1.0, 1.0)


def apply_op(image: Any, name: str, magnitude: float, sign: Any = 1.0) -> Any:
    """Op `name` of OPS at `magnitude` (see `op_argument`); `sign` (±1) flips SIGNED_OPS.

    Args:
      image: uint8 (H, W, 3).
      name: one of OPS.
      magnitude: the RandAugment magnitude.
      sign: +1 or -1 (a float or a float32 scalar tensor).

    Returns:
      uint8 (H, W, 3).
    """
    arg = op_argument(name, magnitude)
    if name in SIGNED_OPS:
        arg = sign * arg
    if name in ("translate_x", "translate_y"):  # a fraction of the width / the height
        side = tf.shape(image)[1 if name == "translate_x" else 0]
        arg = arg * tf.cast(side, tf.float32)
    fn: Callable[..., Any] = _OP_FUNCTIONS[name]
    return fn(image) if arg is None else fn(image, arg)


# --- The ops (uint8 (H, W, 3) → uint8 (H, W, 3)); each is its PIL namesake.


def identity(image: Any) -> Any:
    """The image, unchanged."""
    return tf.identity(image)


def blend(image1: Any, image2: Any, factor: Any) -> Any:
    """image1 + factor * (image2 - image1), clipped to [0, 255] and truncated, as PIL's
    Image.blend (factor > 1 extrapolates away from image1). Shapes broadcast."""
    base = tf.cast(image1, tf.float32)
    out = base + factor * (tf.cast(image2, tf.float32) - base)
    return tf.cast(tf.clip_by_value(out, 0.0, 255.0), tf.uint8)


def _luma(image: Any) -> Any:
    """uint8 (H, W, 3) → int32 (H, W, 1): PIL's convert("L"), rounded, in integers."""
    weighted = tf.cast(image, tf.int32) * tf.constant(LUMA_WEIGHTS_16, tf.int32)  # (H, W, 3)
    return tf.bitwise.right_shift(tf.reduce_sum(weighted, -1, keepdims=True) + 2**15, 16)


def _apply_luts(image: Any, luts: Any) -> Any:
    """Maps channel c of uint8 `image` through luts[:, c] (int (256, 3)) → uint8 (H, W, 3)."""
    index = tf.cast(image, tf.int32) * 3 + tf.range(3)  # (H, W, 3) into the flat (256 * 3,)
    return tf.cast(tf.gather(tf.reshape(luts, [-1]), index), tf.uint8)


def autocontrast(image: Any) -> Any:
    """Stretches each channel to [0, 255] (PIL ImageOps.autocontrast, cutoff 0)."""
    lo = tf.cast(tf.reduce_min(image, axis=[0, 1]), tf.float64)  # (3,)
    hi = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.float64)
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    levels = tf.range(256, dtype=tf.float64)[:, None]  # (256, 1)
    luts = tf.clip_by_value(tf.floor(levels * scale - lo * scale), 0.0, 255.0)  # (256, 3)
    luts = tf.where(hi > lo, luts, levels)  # a flat channel stays as it is
    return _apply_luts(image, tf.cast(luts, tf.int32))


def equalize(image: Any) -> Any:
    """Equalises each channel's histogram (PIL ImageOps.equalize)."""
    pixels = tf.cast(image, tf.int32) + 256 * tf.range(3)  # (H, W, 3): bin c * 256 + v
    hist = tf.math.bincount(tf.reshape(pixels, [-1]), minlength=768, maxlength=768)
    hist = tf.transpose(tf.reshape(hist, [3, 256]))  # (256, 3)
    top = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.int32)  # (3,) highest level present
    top_count = tf.gather(tf.reshape(hist, [-1]), top * 3 + tf.range(3))  # (3,)
    step = (tf.reduce_sum(hist, 0) - top_count) // 255  # (3,)
    below = tf.cumsum(hist, axis=0, exclusive=True)  # (256, 3) pixels below each level
    luts = tf.minimum((below + step // 2) // tf.maximum(step, 1), 255)
    luts = tf.where(step > 0, luts, tf.range(256)[:, None])  # PIL: step 0 → unchanged
    return _apply_luts(image, luts)


def solarize(image: Any, threshold: int) -> Any:
    """Inverts the pixels >= threshold (PIL ImageOps.solarize); 256 changes nothing."""
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def posterize(image: Any, bits: int) -> Any:
    """Keeps the `bits` (1..8) high bits of every pixel (PIL ImageOps.posterize)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"posterize keeps 1..8 bits, got {bits}.")
    return tf.bitwise.bitwise_and(image, tf.constant(256 - 2 ** (8 - bits), tf.uint8))


def color(image: Any, factor: Any) -> Any:
    """Saturation: blends from the grey image (PIL ImageEnhance.Color)."""
    return blend(_luma(image), image, factor)


def contrast(image: Any, factor: Any) -> Any:
    """Blends from the mean grey level (PIL ImageEnhance.Contrast)."""
    luma = _luma(image)
    mean = tf.reduce_sum(tf.cast(luma, tf.float64)) / tf.cast(tf.size(luma), tf.float64)
    return blend(tf.floor(mean + 0.5), image, factor)  # PIL: int(mean + 0.5)


def brightness(image: Any, factor: Any) -> Any:
    """Blends from black (PIL ImageEnhance.Brightness)."""
    return blend(tf.zeros([], tf.float32), image, factor)


def sharpness(image: Any, factor: Any) -> Any:
    """Blends from PIL's SMOOTH-filtered image, borders unfiltered (ImageEnhance.Sharpness)."""
    pixels = tf.cast(image, tf.float32)
    kernel = tf.constant(SMOOTH_KERNEL, tf.float32)[:, :, None, None] / 13.0  # (3, 3, 1, 1)
    smooth = tf.nn.depthwise_conv2d(pixels[None], tf.tile(kernel, [1, 1, 3, 1]),
                                    [1, 1, 1, 1], "VALID")[0]  # (H - 2, W - 2, 3)
    smooth = tf.pad(tf.floor(smooth + 0.5), [[1, 1], [1, 1], [0, 0]])  # PIL rounds
    inside = tf.pad(tf.ones_like(smooth[1:-1, 1:-1, :1], tf.bool), [[1, 1], [1, 1], [0, 0]],
                    constant_values=False)  # (H, W, 1)
    return blend(tf.where(inside, smooth, pixels), image, factor)


def _transform(image: Any, matrix: list[Any]) -> Any:
    """Output pixel (x, y) ← input ((a0 x + a1 y + a2), (b0 x + b1 y + b2)), pixel centres
    at integer coordinates, nearest neighbour, FILL_VALUE outside."""
    matrix = tf.reshape(tf.stack([tf.cast(m, tf.float32) for m in matrix] + [0.0, 0.0]), [1, 8])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=matrix, output_shape=tf.shape(image)[:2],
        fill_value=float(FILL_VALUE), interpolation="NEAREST", fill_mode="CONSTANT")
    return out[0]


def rotate(image: Any, degrees: Any) -> Any:
    """Rotates counter-clockwise about the centre (PIL Image.rotate, NEAREST)."""
    theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    height, width = tf.unstack(tf.cast(tf.shape(image)[:2], tf.float32))
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # input = R(theta) (output - centre) + centre, with y pointing down.
    return _transform(image, [cos, -sin, cx - cos * cx + sin * cy,
                              sin, cos, cy - sin * cx - cos * cy])


def shear_x(image: Any, factor: Any) -> Any:
    """Output (x, y) ← input (x + factor * y, y) (PIL AFFINE (1, factor, 0, 0, 1, 0))."""
    return _transform(image, [1.0, factor, 0.0, 0.0, 1.0, 0.0])


def shear_y(image: Any, factor: Any) -> Any:
    """Output (x, y) ← input (x, factor * x + y) (PIL AFFINE (1, 0, 0, factor, 1, 0))."""
    return _transform(image, [1.0, 0.0, 0.0, factor, 1.0, 0.0])


def translate_x(image: Any, pixels: Any) -> Any:
    """Output (x, y) ← input (x + pixels, y): content moves left by `pixels`."""
    return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0])


def translate_y(image: Any, pixels: Any) -> Any:
    """Output (x, y) ← input (x, y + pixels): content moves up by `pixels`."""
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels])


_OP_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "identity": identity, "autocontrast": autocontrast, "equalize": equalize,
    "rotate": rotate, "solarize": solarize, "color": color, "posterize": posterize,
    "contrast": contrast, "brightness": brightness, "sharpness": sharpness,
    "shear_x": shear_x, "shear_y": shear_y, "translate_x": translate_x,
    "translate_y": translate_y,
}
