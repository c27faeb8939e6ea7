"""The optimizer: schedule formula, weight-decay conventions (big_vision's chain), masks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from vit_core import errors, npz
from vit_jax.training import optim
from vit_torch import recipe

TOTAL, WARMUP, PEAK, END = 30, 5, 2e-3, 1e-4


def _config(**overrides):
    config = default.get_config()
    config.update({"learning_rate": PEAK, "end_learning_rate": END, "warmup_steps": WARMUP,
                   "grad_clip_norm": 0.0, **overrides})
    return config


def _params():
    """A small tree with decayed (kernel) and undecayed leaves."""
    rng = np.random.default_rng(0)
    return {"dense": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
                      "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32)},
            "LayerNorm_0": {"scale": jnp.ones(4, jnp.float32)}}


def reference_schedule(step: int, schedule: str) -> float:
    """The documented formula, written out in float64."""
    if step < WARMUP:
        return PEAK * step / WARMUP
    t = min(step - WARMUP, TOTAL - WARMUP) / (TOTAL - WARMUP)
    return {"cosine": END + (PEAK - END) * 0.5 * (1 + np.cos(np.pi * t)),
            "linear": PEAK + (END - PEAK) * t, "constant": PEAK}[schedule]


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedule_formula_in_both_frameworks(schedule):
    config = _config(schedule=schedule)
    jax_schedule = optim.create_schedule(config, TOTAL)
    torch_recipe = recipe.Recipe.from_config(config, TOTAL)
    for step in range(TOTAL + 3):
        want = reference_schedule(step, schedule)
        assert float(jax_schedule(step)) == pytest.approx(want, rel=1e-6, abs=1e-12)
        assert recipe.learning_rate(step, torch_recipe) == pytest.approx(want, rel=1e-12)


def _run(tx, params, grads_per_step):
    state = tx.init(params)
    for grads in grads_per_step:
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_decay_alone_follows_each_conventions_formula(optimizer):
    """Zero gradients isolate the decay: Adam's and momentum's directions stay 0, so
    kernels shrink by Π(1 − c·η(t)) and nothing else moves."""
    wd, params = 0.05, _params()
    zeros = [jax.tree.map(jnp.zeros_like, params)] * 12
    for convention, c in (("lr_scaled", wd), ("decoupled", wd / PEAK)):
        config = _config(optimizer=optimizer, weight_decay=wd, weight_decay_convention=convention)
        if optimizer == "sgd" and convention == "lr_scaled":
            continue  # L2 through the momentum: the next test
        tx, _ = optim.create_optimizer(config, TOTAL)
        out = _run(tx, params, zeros)
        shrink = np.prod([1 - c * reference_schedule(t, "cosine") for t in range(12)])
        np.testing.assert_allclose(out["dense"]["kernel"], params["dense"]["kernel"] * shrink,
                                   rtol=2e-6)
        np.testing.assert_array_equal(out["dense"]["bias"], params["dense"]["bias"])
        np.testing.assert_array_equal(out["LayerNorm_0"]["scale"], 1.0)


def test_sgd_lr_scaled_is_l2_on_every_parameter():
    """Today's SGD (the default convention): wd·p joins the gradient before the momentum
    (torch.optim.SGD's weight_decay), on every parameter."""
    wd, params = 0.05, _params()
    config = _config(optimizer="sgd", weight_decay=wd, schedule="constant", warmup_steps=0)
    tx, _ = optim.create_optimizer(config, TOTAL)
    zeros = jax.tree.map(jnp.zeros_like, params)
    out = _run(tx, params, [zeros] * 2)
    for got, p in zip(jax.tree.leaves(out), jax.tree.leaves(params), strict=True):
        p = np.asarray(p, np.float64)
        b1 = wd * p  # momentum buffer after step 1
        p1 = p - PEAK * b1
        b2 = wd * p1 + config.momentum * b1
        np.testing.assert_allclose(got, p1 - PEAK * b2, rtol=1e-6)


def big_vision_chain(config, schedule):
    """big_vision/optax.py `make` for scale_by_adam and wd on ".*/kernel$", written out:
    clip → scale_by_adam → scale(lr) → add_decayed_weights(wd) → scale_by_schedule(σ)
    → scale(−1), with σ = η/lr (big_vision's schedule with base=1.0)."""
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm),
        optax.scale_by_adam(b1=config.b1, b2=config.b2),
        optax.scale(config.learning_rate),
        optax.add_decayed_weights(config.weight_decay, optim.decay_mask),
        optax.scale_by_schedule(lambda t: schedule(t) / config.learning_rate),
        optax.scale(-1.0),
    )


def test_decoupled_is_big_visions_chain():
    config = _config(weight_decay=1e-4, weight_decay_convention="decoupled", grad_clip_norm=1.0)
    tx, schedule = optim.create_optimizer(config, TOTAL)
    params = _params()
    rng = np.random.default_rng(1)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
             for _ in range(15)]
    ours, theirs = _run(tx, params, grads), _run(big_vision_chain(config, schedule), params, grads)
    # Same operations but η·(u + (wd/lr)·p) vs σ·(lr·u + wd·p): float32 rounding only.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, theirs)
    # And not the "lr_scaled" reading of the same number.
    other, _ = optim.create_optimizer(_config(weight_decay=1e-4, grad_clip_norm=1.0), TOTAL)
    lr_scaled = _run(other, params, grads)
    assert not np.allclose(lr_scaled["dense"]["kernel"], ours["dense"]["kernel"], rtol=1e-6)


def test_default_is_lr_scaled_optax_adamw():
    """The default keeps the step it always had: optax.adamw(η, wd, kernel mask)."""
    config = _config(weight_decay=0.05)
    assert config.weight_decay_convention == "lr_scaled" and config.adam_mu_dtype is None
    tx, schedule = optim.create_optimizer(config, TOTAL)
    same = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=0.05,
                       mask=optim.decay_mask)
    params = _params()
    grads = [jax.tree.map(lambda p: p * 0.3 + 0.1, params)] * 4
    jax.tree.map(np.testing.assert_array_equal, _run(tx, params, grads),
                 _run(same, params, grads))


def test_bfloat16_first_moment():
    config = _config(adam_mu_dtype="bfloat16")
    tx, _ = optim.create_optimizer(config, TOTAL)
    state = tx.init(_params())
    adam = next(s for s in jax.tree.leaves(state, is_leaf=lambda s: hasattr(s, "mu"))
                if hasattr(s, "mu"))
    assert {x.dtype for x in jax.tree.leaves(adam.mu)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(adam.nu)} == {jnp.dtype(jnp.float32)}


def test_decay_mask_is_kernels_and_torch_decays_the_same_tensors():
    from vit_core.params import param_table
    from vit_jax.model import vit as models
    from vit_torch.model import create_model

    model = models.create_model("testing", num_classes=10, representation_size=32)
    mask = npz.flatten(optim.decay_mask(models.param_shapes(model, 16)))
    decayed = {k for k, v in mask.items() if v}
    assert decayed == {k for k in mask if k.endswith("/kernel")}
    assert "Transformer/posembed_input/pos_embedding" in mask and "cls" in mask
    torch_model = create_model("testing", num_classes=10, img_size=16, representation_size=32)
    pairs = param_table(torch_model.spec)
    names = recipe.decayed_parameters(torch_model)
    assert {k for p in pairs if p.timm_key in names for k in p.npz_keys} == decayed
    assert {k for p in pairs for k in p.npz_keys} == set(mask)  # every leaf was decided


@pytest.mark.parametrize("overrides, match", [
    ({"weight_decay_convention": "coupled"}, "weight_decay_convention must be one of"),
    ({"weight_decay_convention": "decoupled", "weight_decay": 1e-4, "learning_rate": 0.0},
     "set learning_rate > 0"),
])
def test_bad_convention_is_a_config_error(overrides, match):
    with pytest.raises(errors.ConfigError, match=match):
        optim.create_optimizer(_config(**overrides), TOTAL)
