"""Mixup and CutMix on a batch, inside the jitted train step.

One mixing per batch (timm's "batch" mode, big_vision's only mode): every image is mixed
with its *partner*, the image before it in the global batch (`jnp.roll(x, 1, axis=0)`,
as big_vision's `utils.get_mixup`), with the same coefficient λ:

  Mixup  (Zhang et al. 2017) λ ~ Beta(α, α), then λ = max(λ, 1 − λ) (big_vision: each
         image stays the larger part); image = λ·x + (1 − λ)·partner.
  CutMix (Yun et al. 2019) λ ~ Beta(α, α); a box of (1 − λ) of the image area, centre
         uniform, clipped at the border (timm's `rand_bbox`), is pasted from the partner;
         λ = 1 − (box area)/(H·W) after clipping (timm's `correct_lam`).

With both on, CutMix is used with probability `mixup_switch_prob` per batch, else Mixup
(timm's `switch_prob`). Targets are soft: λ·y + (1 − λ)·y_partner, where each y is the
label-smoothed one-hot (timm's `mixup_target`: smooth, then mix; both are affine with
weights summing to 1, so the other order is the same target up to rounding).

Randomness: `step_key(seed, step)`, a stream of its own (dropout's is untouched), the
same on every device, so a resumed run mixes exactly as an uninterrupted one.
Layouts: under "jit" the step sees the global batch and `jnp.roll` is global; under
"pmap" each device holds a slice and the partner of its first image (the last image of
the previous device) comes over `lax.ppermute`. Both mix the same pairs: the global
batch is the devices' slices in device order in both layouts.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vit_core.errors import ConfigError

_STREAM = 0x6D697875  # "mixu": folds the mixing stream off the run's seed


class MixParams(NamedTuple):
    """One batch's mixing, drawn by `sample`.

    Attributes:
      ratio: () float32 λ, the weight of each example's own label.
      box: (4,) int32 (y0, y1, x0, x1), the region taken from the partner under CutMix.
      cutmix: () bool, CutMix (True) or Mixup (False) for this batch.
    """

    ratio: jax.Array
    box: jax.Array
    cutmix: jax.Array


def enabled(config: Any) -> bool:
    """Whether `config` mixes at all (checks the fields; raises ConfigError if bad)."""
    for name in ("mixup_alpha", "cutmix_alpha"):
        if config[name] < 0:
            raise ConfigError(f"config.{name} must be >= 0 (0 = off), got {config[name]}.")
    if not 0.0 <= config.mixup_switch_prob <= 1.0:
        raise ConfigError("config.mixup_switch_prob is a probability in [0, 1], got "
                          f"{config.mixup_switch_prob}.")
    return bool(config.mixup_alpha or config.cutmix_alpha)


def step_key(seed: int, step: jax.Array | int) -> jax.Array:
    """The key of the mixing of optimizer step `step` (0-based, as `TrainState.step`)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _STREAM), step)


def sample(key: jax.Array, config: Any, height: int, width: int) -> MixParams:
    """Draws λ, the CutMix box and the choice between the two (jittable).

    Args:
      key: from `step_key`.
      config: mixup_alpha, cutmix_alpha, mixup_switch_prob (at least one alpha > 0).
      height, width: image size in pixels.

    Returns:
      The batch's `MixParams`.
    """
    k_switch, k_mix, k_cut, k_y, k_x = jax.random.split(key, 5)
    empty = jnp.zeros(4, jnp.int32)
    if config.mixup_alpha:
        lam = jax.random.beta(k_mix, config.mixup_alpha, config.mixup_alpha)
        mix = MixParams(jnp.maximum(lam, 1.0 - lam), empty, jnp.asarray(False))
        if not config.cutmix_alpha:
            return mix
    lam = jax.random.beta(k_cut, config.cutmix_alpha, config.cutmix_alpha)
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = jnp.floor(height * ratio).astype(jnp.int32)
    cut_w = jnp.floor(width * ratio).astype(jnp.int32)
    cy = jax.random.randint(k_y, (), 0, height)
    cx = jax.random.randint(k_x, (), 0, width)
    y0, y1 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + (cut_h + 1) // 2, 0, height)
    x0, x1 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + (cut_w + 1) // 2, 0, width)
    area = ((y1 - y0) * (x1 - x0)).astype(jnp.float32)
    cut = MixParams(1.0 - area / (height * width), jnp.stack([y0, y1, x0, x1]),
                    jnp.asarray(True))
    if not config.mixup_alpha:
        return cut
    use_cut = jax.random.uniform(k_switch) < config.mixup_switch_prob
    return jax.tree.map(lambda c, m: jnp.where(use_cut, c, m), cut, mix)


def pixel_weights(params: MixParams, height: int, width: int) -> jax.Array:
    """(H, W) float32 weight of each example's own image: λ everywhere (Mixup), or 0
    inside the box and 1 outside (CutMix)."""
    y0, y1, x0, x1 = params.box
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)  # (H, W)
    return jnp.where(params.cutmix, (~inside).astype(jnp.float32),
                     jnp.broadcast_to(params.ratio, (height, width)))


def partner(x: jax.Array, axis_name: str | None = None) -> jax.Array:
    """Each example's mixing partner: the previous example of the global batch.

    Args:
      x: (B, ...) the batch (global under jit, this device's slice under pmap).
      axis_name: the pmap axis, or None under jit.

    Returns:
      (B, ...) `jnp.roll(global batch, 1, axis=0)`, this device's slice of it.
    """
    if axis_name is None:
        return jnp.roll(x, 1, axis=0)
    n = jax.lax.axis_size(axis_name)
    last = jax.lax.ppermute(x[-1:], axis_name, perm=[(i, (i + 1) % n) for i in range(n)])
    return jnp.concatenate([last, x[:-1]], axis=0)


def mix(images: jax.Array, labels: jax.Array, params: MixParams, num_classes: int,
        label_smoothing: float, axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
    """Mixes a batch with its partners.

    Args:
      images: (B, H, W, C) float images.
      labels: (B,) int class labels.
      params: from `sample`.
      num_classes: width of the targets.
      label_smoothing: applied to each one-hot before mixing.
      axis_name: the pmap axis, or None under jit (see `partner`).

    Returns:
      (B, H, W, C) mixed images and (B, num_classes) float32 soft targets (rows sum to 1).
    """
    h, w = images.shape[1:3]
    weight = pixel_weights(params, h, w)[None, :, :, None].astype(images.dtype)  # (1, H, W, 1)
    mixed = images * weight + partner(images, axis_name) * (1 - weight)  # (B, H, W, C)

    def smoothed(y: jax.Array) -> jax.Array:
        one_hot = jax.nn.one_hot(y, num_classes)  # (B, K)
        return optax.smooth_labels(one_hot, label_smoothing) if label_smoothing else one_hot

    lam = params.ratio
    targets = lam * smoothed(labels) + (1 - lam) * smoothed(partner(labels, axis_name))
    return mixed, targets
