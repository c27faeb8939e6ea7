"""The optimizer and learning-rate schedule of a training config (optax).

`create_optimizer(config, total_steps)` returns the gradient transformation that
`vit_jax.training.steps.make_train_step` applies and the schedule it reports.

Weight decay comes in two conventions (`config.weight_decay_convention`); both decay
only the kernels (`decays`), and both follow the learning-rate schedule:

  "lr_scaled"  Δp = −η(t)·(u + wd·p): the decay is multiplied by the scheduled learning
               rate η(t). `optax.adamw` and `torch.optim.AdamW` (which computes
               p ← p·(1 − η(t)·wd)), and the Flax optimizers of the original ViT code.
  "decoupled"  Δp = −σ(t)·(lr·u + wd·p), σ(t) = η(t)/lr ∈ [0, 1]: the decay follows the
               schedule's shape but is not multiplied by the peak learning rate. This is
               big_vision's `big_vision/optax.py::make`, whose chain is
               clip → scale_by_adam → scale(lr) → add_decayed_weights(wd, ".*/kernel$")
               → scale_by_schedule(σ) → scale(−1), σ from
               `utils.create_learning_rate_schedule(base=1.0, ...)`.

u is the optimizer's direction (Adam's m̂/(√v̂ + eps), or the momentum buffer). The same
decay is wd_decoupled = wd_lr_scaled · lr: big_vision's S/16 wd=1e-4 at lr=1e-3 is
weight_decay=0.1 in the "lr_scaled" convention. The "decoupled" transformation is built
as the "lr_scaled" one with wd/lr, which is the formula above exactly:
−η(t)·(u + (wd/lr)·p) = −σ(t)·(lr·u + wd·p).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import optax

from vit_core import npz
from vit_core.errors import ConfigError

WEIGHT_DECAY_CONVENTIONS = ("lr_scaled", "decoupled")


def create_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, then cosine / linear decay or constant.

    Args:
      config: learning_rate, end_learning_rate, warmup_steps and schedule.
      total_steps: optimizer steps of the run.

    Returns:
      step → learning rate (float32); step 0 is the first update's (0 with warm-up).
    """
    warmup = min(config.warmup_steps, total_steps)
    decay_steps = max(total_steps - warmup, 1)
    if config.schedule == "cosine":
        peak = config.learning_rate
        alpha = config.end_learning_rate / peak if peak else 0.0  # lr 0: constant 0
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=alpha)
    elif config.schedule == "linear":
        decay = optax.linear_schedule(config.learning_rate, config.end_learning_rate, decay_steps)
    elif config.schedule == "constant":
        decay = optax.constant_schedule(config.learning_rate)
    else:
        raise ConfigError(f"Unknown schedule {config.schedule!r} (cosine | linear | constant).")
    warm = optax.linear_schedule(0.0, config.learning_rate, max(warmup, 1))
    return optax.join_schedules([warm, decay], [warmup])


def decays(key: str) -> bool:
    """Whether the parameter at "/"-joined path `key` is weight-decayed: kernels only.

    Matrices (dense, attention and patch-embedding kernels) decay; biases, LayerNorm
    scales, the class token and position embeddings do not (big_vision's default
    `wd_mults=[(".*/kernel$", 1.0)]`). `vit_torch.recipe` applies the same rule through
    the npz names of its parameters.
    """
    return key.endswith("kernel")


def decay_mask(params: Any) -> Any:
    """The tree of `decays` booleans for a parameter tree."""
    flat = npz.flatten(params)
    return npz.unflatten({k: decays(k) for k in flat})


def create_optimizer(
    config: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Global-norm clipping, then AdamW or SGD with momentum, decay per the convention.

    Args:
      config: optimizer, learning-rate schedule, weight_decay, weight_decay_convention,
        b1, b2, adam_mu_dtype, momentum and grad_clip_norm.
      total_steps: optimizer steps of the run.

    Returns:
      (the transformation, the learning-rate schedule).

    Raises:
      ConfigError: an unknown optimizer, schedule or convention, or "decoupled" decay
        with a zero peak learning rate (its decay is wd·η(t)/lr).
    """
    schedule = create_schedule(config, total_steps)
    convention = config.weight_decay_convention
    if convention not in WEIGHT_DECAY_CONVENTIONS:
        raise ConfigError(f"config.weight_decay_convention must be one of "
                          f"{WEIGHT_DECAY_CONVENTIONS}, got {convention!r}.")
    wd = config.weight_decay
    if convention == "decoupled" and wd:
        if not config.learning_rate:
            raise ConfigError("weight_decay_convention='decoupled' scales the decay by "
                              "η(t)/learning_rate; set learning_rate > 0.")
        wd = wd / config.learning_rate  # see the module docstring: the formula exactly
    if config.optimizer == "adamw":
        tx = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=wd,
                         mask=decay_mask, mu_dtype=config.adam_mu_dtype)
    elif config.optimizer == "sgd" and convention == "lr_scaled":
        # torch.optim.SGD's weight_decay: wd·p joins the gradient before the momentum
        # (an L2 term), on every parameter.
        tx = optax.chain(optax.add_decayed_weights(wd) if wd else optax.identity(),
                         optax.sgd(schedule, momentum=config.momentum))
    elif config.optimizer == "sgd":
        # big_vision's momentum_hp + its decay: decoupled from the momentum, kernels only.
        tx = optax.chain(optax.trace(decay=config.momentum),
                         optax.add_decayed_weights(wd, mask=decay_mask),
                         optax.scale_by_learning_rate(schedule))
    else:
        raise ConfigError(f"Unknown optimizer {config.optimizer!r} (adamw | sgd).")
    if config.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    return tx, schedule
