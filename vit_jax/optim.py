"""The optimizer and learning-rate schedule of a training config (optax).

`create_optimizer(config, total_steps)` returns the gradient transformation that
`vit_jax.steps.make_train_step` applies and the schedule it reports.
"""

from __future__ import annotations

import ml_collections
import optax

from vit_jax import checkpoint
from vit_jax.errors import ConfigError


def create_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, then cosine / linear decay or constant."""
    warmup = min(config.warmup_steps, total_steps)
    decay_steps = max(total_steps - warmup, 1)
    if config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(
            config.learning_rate, decay_steps, alpha=config.end_learning_rate / config.learning_rate
        )
    elif config.schedule == "linear":
        decay = optax.linear_schedule(config.learning_rate, config.end_learning_rate, decay_steps)
    elif config.schedule == "constant":
        decay = optax.constant_schedule(config.learning_rate)
    else:
        raise ConfigError(f"Unknown schedule {config.schedule!r} (cosine | linear | constant).")
    warm = optax.linear_schedule(0.0, config.learning_rate, max(warmup, 1))
    return optax.join_schedules([warm, decay], [warmup])


def create_optimizer(
    config: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Global-norm clipping, then AdamW (decay on kernels only) or SGD with momentum."""
    schedule = create_schedule(config, total_steps)
    if config.optimizer == "adamw":
        # Decay only matrices (`.../kernel`), not biases, norms or embeddings (big_vision).
        def decay_mask(params):
            flat = checkpoint.flatten(params)
            return checkpoint.unflatten({k: k.endswith("kernel") for k in flat})

        tx = optax.adamw(schedule, b1=config.b1, b2=config.b2,
                         weight_decay=config.weight_decay, mask=decay_mask)
    elif config.optimizer == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(config.weight_decay) if config.weight_decay
            else optax.identity(),
            optax.sgd(schedule, momentum=config.momentum),
        )
    else:
        raise ConfigError(f"Unknown optimizer {config.optimizer!r} (adamw | sgd).")
    if config.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    return tx, schedule
