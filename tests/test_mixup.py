"""Mixup / CutMix inside the train step: numpy references, soft targets, layouts, off = off."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from vit_core import errors
from vit_jax.data import mixup
from vit_jax.model import vit as models
from vit_jax.training import optim, parallel, steps
from vit_jax.training.state import TrainState

K, B, S = 10, 16, 8  # classes, batch, image side
MODES = {"mixup": dict(mixup_alpha=0.2), "cutmix": dict(cutmix_alpha=1.0),
         "both": dict(mixup_alpha=0.8, cutmix_alpha=1.0)}


def make_config(**overrides):
    config = default.get_config()
    config.update({"image_size": S, "batch_size": B, "warmup_steps": 1, "seed": 3,
                   **overrides})
    return config


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.uniform(-1, 1, (B, S, S, 3)).astype(np.float32),
            "label": rng.integers(0, K, B).astype(np.int32)}


def numpy_mix(images, labels, params, smoothing):
    """The documented mixing, written out in numpy (float64 targets)."""
    ratio, cut = float(params.ratio), bool(params.cutmix)
    weight = np.full((S, S), ratio, np.float32)
    if cut:
        y0, y1, x0, x1 = np.asarray(params.box)
        weight = np.ones((S, S), np.float32)
        weight[y0:y1, x0:x1] = 0.0
    w = weight[None, :, :, None]
    mixed = images * w + np.roll(images, 1, axis=0) * (np.float32(1) - w)
    smooth = np.eye(K)[labels] * (1 - smoothing) + smoothing / K
    return mixed, ratio * smooth + (1 - ratio) * np.roll(smooth, 1, axis=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mix_matches_numpy_and_targets_sum_to_one(mode, smoothing):
    config, data = make_config(**MODES[mode]), batch()
    params = mixup.sample(mixup.step_key(config.seed, 7), config, S, S)
    images, targets = jax.jit(mixup.mix, static_argnums=(3, 4))(
        data["image"], data["label"], params, K, smoothing)
    want_images, want_targets = numpy_mix(data["image"], data["label"], params, smoothing)
    np.testing.assert_allclose(images, want_images, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(targets, want_targets, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.sum(targets, axis=-1), 1.0, rtol=1e-6)
    assert targets.shape == (B, K) and bool(params.cutmix) == (mode == "cutmix" or (
        mode == "both" and bool(params.cutmix)))


def test_sampled_coefficients_follow_the_documented_rules():
    keys = jax.vmap(lambda s: mixup.step_key(0, s))(jnp.arange(400))
    draw = jax.vmap(lambda k, c: mixup.sample(k, c, 12, 20), in_axes=(0, None))
    mix = draw(keys, make_config(**MODES["mixup"]))
    assert not mix.cutmix.any() and (mix.ratio >= 0.5).all() and (mix.ratio <= 1).all()
    cut = draw(keys, make_config(**MODES["cutmix"]))
    y0, y1, x0, x1 = np.asarray(cut.box).T
    assert cut.cutmix.all() and (y0 >= 0).all() and (y0 <= y1).all() and (y1 <= 12).all()
    assert (x0 >= 0).all() and (x0 <= x1).all() and (x1 <= 20).all()
    np.testing.assert_allclose(cut.ratio, 1 - (y1 - y0) * (x1 - x0) / 240, rtol=1e-6)
    assert 0.4 < np.mean(cut.ratio) < 0.75  # E[λ] = 0.5 for Beta(1, 1), more after clipping
    both = draw(keys, make_config(**MODES["both"]))
    assert 0.4 < np.mean(both.cutmix) < 0.6  # mixup_switch_prob = 0.5
    for prob, expect in ((0.0, False), (1.0, True)):
        assert (draw(keys, make_config(**MODES["both"], mixup_switch_prob=prob)).cutmix
                == expect).all()
    # A different step, a different draw; the same step, the same draw (resume).
    assert float(mixup.sample(keys[1], make_config(**MODES["mixup"]), 8, 8).ratio) == float(
        mix.ratio[1]) != float(mix.ratio[2])


def _model_and_state(config):
    """The model, optimizer and a state whose head is random (the init's is zero, which
    would make every loss log K)."""
    model = models.model_from_config(config.model, K)
    tx, schedule = optim.create_optimizer(config, 10)
    params = TrainState.create(model, tx, config).params
    params["head"]["kernel"] = jax.random.normal(jax.random.key(9), params["head"]["kernel"].shape)
    return model, tx, schedule, TrainState.create(model, tx, config, pretrained=params)


def test_train_step_loss_is_the_hand_computed_mix():
    config = make_config(**MODES["both"], label_smoothing=0.1)
    model, tx, schedule, state = _model_and_state(config)
    data = batch(1)
    step = jax.jit(steps.make_train_step(model, tx, schedule, config))
    _, metrics = step(state, data)
    params = mixup.sample(mixup.step_key(config.seed, 0), config, S, S)
    images, targets = numpy_mix(data["image"], data["label"], params, 0.1)
    logits = np.asarray(model.apply({"params": state.params}, images), np.float64)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    want = -np.mean(np.sum(targets * log_p, axis=-1))
    assert float(metrics["loss"]) == pytest.approx(want, rel=1e-5)
    # Not the unmixed loss (the test can tell the difference).
    plain = -np.mean(log_p[np.arange(B), data["label"]])
    assert abs(want - plain) > 1e-3


def test_off_is_the_unchanged_step():
    """Both alphas 0: the step is today's, bit for bit (written out here)."""
    config = make_config(label_smoothing=0.1)
    model, tx, schedule, state = _model_and_state(config)
    data = batch(2)

    def todays_step(state, batch):
        rng = jax.random.fold_in(jax.random.key(config.seed + 1), state.step)

        def loss_fn(params):
            logits = model.apply({"params": params}, batch["image"], train=True,
                                 rngs={"dropout": rng})
            loss = steps.cross_entropy(logits, batch["label"], 0.1).mean()
            return loss, (logits.argmax(-1) == batch["label"]).mean()

        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, _ = tx.update(grads, state.opt_state, state.params)
        return optax.apply_updates(state.params, updates), loss

    want_params, want_loss = jax.jit(todays_step)(state, data)
    new, metrics = jax.jit(steps.make_train_step(model, tx, schedule, config))(state, data)
    assert np.asarray(metrics["loss"]).tobytes() == np.asarray(want_loss).tobytes()
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), new.params, want_params)


@pytest.mark.slow  # three layouts compiled on 8 fake devices
def test_jit_pmap_and_accumulation_mix_the_same_pairs():
    """The partner is the previous example of the GLOBAL batch in every layout: under
    pmap it crosses device boundaries (8 fake devices, 2 examples each)."""
    assert jax.device_count() == 8  # tests/conftest.py
    results = {}
    for name, kw in (("jit", {}), ("pmap", {"parallelism": "pmap"}),
                     ("accum", {"grad_accum_steps": 2})):
        # SGD, as tests/test_train.py: Adam would blow float noise up to lr-sized steps.
        config = make_config(**MODES["both"], optimizer="sgd", learning_rate=0.1, **kw)
        model = models.model_from_config(config.model, K)
        tx, schedule = optim.create_optimizer(config, 10)
        layout = parallel.create_layout(config)
        state = layout.init_state(
            lambda p, model=model, tx=tx, config=config: TrainState.create(model, tx, config, p),
            None)
        step = layout.compile_train_step(
            steps.make_train_step(model, tx, schedule, config, axis_name=layout.axis_name))
        losses = []
        for i in range(2):
            state, metrics = step(state, layout.shard_batch(batch(10 + i)))
            losses.append(float(layout.unreplicate(jax.device_get(metrics))["loss"]))
        results[name] = losses, jax.device_get(layout.host_state(state).params)
    for name in ("pmap", "accum"):
        np.testing.assert_allclose(results[name][0], results["jit"][0], rtol=2e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                     results[name][1], results["jit"][1])


@pytest.mark.parametrize("overrides, match", [
    ({"mixup_alpha": -0.1}, "mixup_alpha must be >= 0"),
    ({"cutmix_alpha": -1.0}, "cutmix_alpha must be >= 0"),
    ({"mixup_switch_prob": 1.5}, "mixup_switch_prob is a probability"),
])
def test_bad_fields_are_config_errors(overrides, match):
    with pytest.raises(errors.ConfigError, match=match):
        mixup.enabled(make_config(**overrides))
