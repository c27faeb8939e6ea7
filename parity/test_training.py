"""Training parity: loss, gradients of every parameter, AdamW and SGD-momentum steps.

On the small cases and Ti/16 (one real variant: B/16 back-propagation in both frameworks
would cost more than this whole suite's budget on 2 CPU cores).
"""

from __future__ import annotations

import numpy as np
import pytest

from parity import cases, harness, training
from parity.training import TrainPair

EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module", params=[c for c in cases.CASES if c.train],
                ids=lambda c: c.name)
def result(request: pytest.FixtureRequest) -> TrainPair:
    """Gradients and optimizer steps of one case, computed once for this module."""
    return training.measure_training(request.param)


def test_loss(result: TrainPair) -> None:
    flax_loss, torch_loss = result.loss
    assert abs(flax_loss - torch_loss) <= harness.LOGITS_REL * abs(flax_loss)


def test_gradients_of_every_parameter(result: TrainPair) -> None:
    """Per parameter, max |Δ grad| ≤ GRAD_REL · max |grad| (npz keys name the tensor)."""
    flax_grads, torch_grads = result.grads
    scale = {k: result.grad_scale(k) for k in flax_grads}
    harness.assert_rel_close(torch_grads, flax_grads, training.GRAD_REL, scale)
    assert max(result.grad_rel().values()) <= training.GRAD_REL


def test_key_bias_gradient_is_zero(result: TrainPair) -> None:
    """The cause of the key biases' special scale: softmax cancels them, so both
    frameworks' gradients there are round-off, 1e-6 of the model's largest at most."""
    keys = [k for k in result.grads[0] if training.ZERO_GRAD.search(k)]
    assert keys
    for grads in result.grads:
        biggest = max(float(np.max(np.abs(g))) for g in grads.values())
        assert all(np.max(np.abs(grads[k])) <= 1e-6 * biggest for k in keys)


def _assert_steps_close(result: TrainPair, name: str, same_grads: bool, bound: float) -> None:
    """chex, per weight tensor: |Δ| ≤ bound · step + STEP_ULPS float32 ulps of the weight."""
    got, want, step = result.step_compare(name, same_grads)
    harness.assert_rel_close(got, want, bound, step, rtol=training.STEP_ULPS * EPS32)
    assert max(result.step_rel(name, same_grads).values()) <= bound  # the reported number


@pytest.mark.parametrize("name", training.OPTIMIZERS)
def test_steps_on_the_same_gradients(result: TrainPair, name: str) -> None:
    """Two steps fed identical gradients: the optimizers themselves agree (eps placement,
    decoupled decay, bias correction, momentum, dampening, nesterov)."""
    _assert_steps_close(result, name, True, training.STEP_REL[name])


@pytest.mark.parametrize("name", training.OPTIMIZERS)
def test_one_step_on_own_gradients(result: TrainPair, name: str) -> None:
    """End to end: each framework's backprop, then one step; same weights after."""
    _assert_steps_close(result, name, False, training.OWN_STEP_REL[name])
    if name == "adamw":  # the |g| ≥ 1e4·eps mask must leave most of the weights compared
        grads = np.concatenate([g.ravel() for g in result.grads[0].values()])
        assert np.mean(np.abs(grads) >= training.ADAM_WELL_CONDITIONED) > 0.8
