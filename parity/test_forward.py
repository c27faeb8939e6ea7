"""Forward parity, float32: Flax → npz → torch and torch → npz → Flax.

For every case of `cases.CASES` (the testing variant with each option, Ti/16, S/16,
B/16, B/32, a "gap" model and a representation-layer model), random weights and images:
the logits and every named intermediate ("embedded", "block_{i}", "encoded",
"pre_logits") agree in both directions.
"""

from __future__ import annotations

import numpy as np
import pytest

from parity import cases, harness, weights
from parity.harness import ForwardPair
from vit_core.variants import decode_variant


@pytest.fixture(scope="module", params=cases.CASES, ids=lambda c: c.name)
def pairs(request: pytest.FixtureRequest) -> tuple[cases.Case, list[ForwardPair]]:
    """Both directions of one case, computed once for the tests of this module."""
    case = request.param
    return case, [harness.forward_flax_to_torch(case), harness.forward_torch_to_flax(case)]


def test_logits(pairs: tuple[cases.Case, list[ForwardPair]]) -> None:
    case, both = pairs
    for pair in both:
        want = {f"{pair.direction} logits": pair.source.logits}
        got = {f"{pair.direction} logits": pair.target.logits}
        harness.assert_rel_close(got, want, harness.LOGITS_REL)
        assert pair.source.logits.shape == (case.batch, case.num_classes)
        # Random head and biases: logits of order one, not the zero-init head's zeros.
        assert np.max(np.abs(pair.source.logits)) > 0.3


def test_every_intermediate(pairs: tuple[cases.Case, list[ForwardPair]]) -> None:
    """Same keys, same shapes, same values: "embedded" is the tokens (with the class
    token) before the position embedding in both models, or this fails by ~posemb."""
    case, both = pairs
    spec = decode_variant(case.variant)
    layers = [f"block_{i}" for i in range(spec.num_layers)]
    for pair in both:
        assert sorted(pair.source.features) == sorted(
            ["embedded", *layers, "encoded", "pre_logits"])
        harness.assert_rel_close(pair.target.features, pair.source.features,
                                 harness.FEATURE_REL)


def test_gelu_flag_changes_the_function() -> None:
    """The exact-GELU cases would prove nothing if a framework ignored the flag: the same
    weights with the tanh approximation give logits 2.4e-4 apart (relative) in both
    frameworks, ~50x LOGITS_REL; asserted > 10x."""
    case, approximate = (cases.CASES_BY_NAME[n] for n in ("testing/exact-gelu", "testing"))
    params, images = weights.init_flax(case, 0), weights.random_images(case, 0)
    model = weights.flax_to_torch(case, params)
    exact = harness.flax_forward(case, params, images).logits
    tanh = harness.flax_forward(approximate, params, images).logits
    assert harness.rel_diff(tanh, exact) > 10 * harness.LOGITS_REL
    model_tanh = weights.flax_to_torch(approximate, params)
    torch_exact = harness.torch_forward(model, images).logits
    torch_tanh = harness.torch_forward(model_tanh, images).logits
    assert harness.rel_diff(torch_tanh, torch_exact) > 10 * harness.LOGITS_REL
