"""Recipe parity: 20 steps of the S/16-i1k and B/16 recipes in Flax and PyTorch agree.

Schedule, global-norm clipping, AdamW with both weight-decay conventions and the kernel
mask, label smoothing and Mixup/CutMix soft targets, end to end on the testing model
(`parity.recipe`; bounds and their causes there).
"""

from __future__ import annotations

import numpy as np
import pytest

from parity import harness, recipe
from parity.recipe import RecipeRun

EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module", params=list(recipe.CASES))
def run(request: pytest.FixtureRequest) -> RecipeRun:
    return recipe.measure_recipe(request.param)


@pytest.mark.slow  # 20 steps in each framework per case (~1 min on a loaded 2-core box)
def test_loss_of_every_step(run: RecipeRun) -> None:
    flax, torch = run.losses
    assert flax.shape == (recipe.STEPS,) and np.all(np.isfinite(flax))
    np.testing.assert_allclose(torch, flax, rtol=recipe.LOSS_REL, atol=0)
    assert run.loss_rel().max() <= recipe.LOSS_REL  # the number `python -m parity` prints


@pytest.mark.slow
def test_every_parameter_at_the_end(run: RecipeRun) -> None:
    """Per tensor |Δ| ≤ PARAM_REL · its movement over the 20 steps + ROUND_ULPS ulps of
    each weight (chex, names the key)."""
    keys = run.compared_keys()
    assert len(keys) == len(run.before) - 2  # only the two key biases are left out
    flax, torch = run.after
    scale = {k: run.moved(k) for k in keys}
    assert min(scale.values()) > 0  # every compared tensor trained
    harness.assert_rel_close({k: torch[k] for k in keys}, {k: flax[k] for k in keys},
                             recipe.PARAM_REL, scale, rtol=recipe.ROUND_ULPS * EPS32)
    assert max(run.param_rel().values()) <= recipe.PARAM_REL


def test_the_recipes_are_what_they_say() -> None:
    """The cases exercise what the comparison claims to cover."""
    s16, b16 = recipe.s16_i1k_config(), recipe.b16_config()
    assert s16.weight_decay_convention == "decoupled" and s16.mixup_alpha == 0.2
    assert (s16.model.classifier, s16.model.representation_size) == ("gap", 32)
    assert b16.weight_decay_convention == "lr_scaled" and b16.label_smoothing == 0.1
    assert b16.cutmix_alpha and b16.mixup_alpha and b16.grad_clip_norm == s16.grad_clip_norm == 1
    data = recipe.batches(b16)
    assert 0 < data["mix_cutmix"].sum() < recipe.STEPS  # both kinds of mixing ran
