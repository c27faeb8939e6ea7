"""Position-embedding resize (224 → 384) and bfloat16 compute, across frameworks."""

from __future__ import annotations

import numpy as np
import pytest

from parity import cases, harness
from vit_core.variants import decode_variant


@pytest.mark.parametrize("case", cases.RESIZE_CASES, ids=lambda c: c.name)
def test_resized_posemb_gives_the_same_function(case: cases.Case) -> None:
    """Weights saved at 224; JAX `adapt_pretrained` and torch `load_npz(resize=True)` at 384."""
    result = harness.measure_resize(case)
    patch = dict(case.options).get("patch_size", decode_variant(case.variant).patch_size)
    prefix = 1 if dict(case.options).get("classifier", "token") == "token" else 0
    tokens = prefix + (cases.RESIZE_TO // patch) ** 2
    flax_posemb, torch_posemb = result.posemb
    assert flax_posemb.shape == torch_posemb.shape == (1, tokens, flax_posemb.shape[-1])
    np.testing.assert_array_equal(torch_posemb, flax_posemb)  # one resampling function
    pair = result.pair
    assert pair.source.features["embedded"].shape[1] == tokens
    harness.assert_rel_close({"logits": pair.target.logits}, {"logits": pair.source.logits},
                             harness.LOGITS_REL)
    harness.assert_rel_close(pair.target.features, pair.source.features, harness.FEATURE_REL)


@pytest.mark.parametrize("case", cases.BF16_CASES, ids=lambda c: c.name)
def test_bf16_compute(case: cases.Case) -> None:
    """bfloat16 keeps 8 significant bits (unit round-off 2^-9 ≈ 2e-3), and its errors pile
    up over the blocks: the logits move by ~1e-2 of their size in both frameworks (see
    `python -m parity`). BF16_REL = 3e-2 leaves 3x room for other CPUs. The lower bound
    shows both runs really computed in bfloat16 (float32 parity is 1e-6)."""
    r = harness.measure_bf16(case)
    assert r.jax_vs_f32 <= harness.BF16_REL, r
    assert r.torch_vs_f32 <= harness.BF16_REL, r
    assert r.jax_vs_torch <= harness.BF16_REL, r
    assert min(r.jax_vs_f32, r.torch_vs_f32) > 100 * harness.LOGITS_REL, r
