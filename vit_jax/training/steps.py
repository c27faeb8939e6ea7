"""The pure step functions every layout compiles: `train_step`, `eval_step`, the loss.

`make_train_step` and `make_eval_step` build plain functions of arrays;
`vit_jax.training.parallel` compiles them once for its layout (jit over a mesh, or pmap
with `axis_name`). The training loop (`vit_jax.training.trainer`), evaluation
(`vit_jax.training.evaluation`) and the benchmarks (`vit_jax.tools`) import them from here.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vit_jax.data import mixup
from vit_jax.model import vit
from vit_jax.training.state import TrainState


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """Per-example softmax cross-entropy with optional label smoothing."""
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)  # (B,)


def make_train_step(
    model: vit.VisionTransformer, tx: optax.GradientTransformation,
    schedule: optax.Schedule, config: ml_collections.ConfigDict, axis_name: str | None = None,
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the pure step `(state, batch) -> (state, metrics)`.

    One optimizer update per call. With `grad_accum_steps > 1` the batch is split into
    that many micro-batches whose gradients are averaged (`lax.scan`), so only one
    micro-batch of activations is alive at a time. Dropout randomness is
    `fold_in(seed, step)`: a resumed run draws the same masks. Under pmap, `axis_name`
    names the device axis and gradients/metrics are averaged with `lax.pmean`.

    With `mixup_alpha` or `cutmix_alpha` > 0 the whole batch is mixed first
    (`vit_jax.data.mixup`, keyed by `mixup.step_key(seed, step)`), before any micro-batch
    split, and the loss is the cross-entropy against the soft targets; "accuracy" is
    then against each example's own label. With both 0 the step is unchanged.
    """
    accum = config.grad_accum_steps
    base_rng = jax.random.key(config.seed + 1)
    mixing = mixup.enabled(config)

    def per_example_loss(logits, targets):  # targets: (B,) labels, or (B, K) if mixing
        if mixing:  # label smoothing is already in the mixed targets
            return optax.softmax_cross_entropy(logits, targets)  # (B,)
        return cross_entropy(logits, targets, config.label_smoothing)

    def loss_fn(params, images, targets, labels, rng):
        logits = model.apply({"params": params}, images, train=True, rngs={"dropout": rng})
        loss = per_example_loss(logits, targets).mean()
        return loss, (logits.argmax(-1) == labels).mean()

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        rng = jax.random.fold_in(base_rng, state.step)
        if axis_name is not None:  # a different dropout mask on every device
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        images, labels = batch["image"], batch["label"]
        targets = labels
        if mixing:  # the same λ and box on every device: the key has no device index
            mix = mixup.sample(mixup.step_key(config.seed, state.step), config,
                               *images.shape[1:3])
            images, targets = mixup.mix(images, labels, mix, model.num_classes,
                                        config.label_smoothing, axis_name)
        if accum == 1:
            (loss, acc), grads = grad_fn(state.params, images, targets, labels, rng)
        else:
            micro = jax.tree.map(lambda x: x.reshape(accum, -1, *x.shape[1:]),
                                 (images, targets, labels))

            def body(carry, xs):
                i, (img, tgt, lab) = xs
                (loss, acc), g = grad_fn(state.params, img, tgt, lab, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, carry, (g, loss, acc)), None

            zeros = (jax.tree.map(jnp.zeros_like, state.params), 0.0, 0.0)
            sums, _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
            grads, loss, acc = jax.tree.map(lambda s: s / accum, sums)
        if axis_name is not None:
            grads, loss, acc = jax.lax.pmean((grads, loss, acc), axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "accuracy": acc, "grad_norm": optax.tree.norm(grads),
                   "learning_rate": schedule(state.step)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_eval_step(model: vit.VisionTransformer) -> Callable[..., dict[str, jax.Array]]:
    """Builds `(params, batch) -> sums` of correct top-1/top-5, loss and real examples."""

    def eval_step(params, batch):
        logits = model.apply({"params": params}, batch["image"], train=False)
        mask = batch["mask"]
        top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]  # (B, 5)
        labels = batch["label"]
        return {
            "top1": jnp.sum((top5[:, 0] == labels) * mask),
            "top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
            "loss": jnp.sum(cross_entropy(logits, labels, 0.0) * mask),
            "count": jnp.sum(mask),
        }

    return eval_step
