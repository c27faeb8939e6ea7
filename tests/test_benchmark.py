"""Tests for the analytic FLOP count and the benchmark harness (no timing assertions)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import pytest

from vit_core.spec import ViTSpec
from vit_jax import benchmark
from vit_jax.model import flops
from vit_jax.model import vit as models


@pytest.mark.parametrize("variant, gmacs", [("Ti/16", 1.26), ("S/16", 4.61), ("B/16", 17.6)])
def test_forward_macs_match_reference_values(variant: str, gmacs: float) -> None:
    # The reference values at 224² with a 1000-class head.
    assert flops.forward_macs(ViTSpec.from_variant(variant)) / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_breakdown_and_step_flops() -> None:
    spec = ViTSpec.from_variant("B/16")
    b = flops.macs_breakdown(spec)
    n, d, layers = 197, 768, 12
    assert b.qkv == layers * n * d * 3 * d
    assert b.attention_scores == b.attention_values == layers * n * n * d
    assert b.patch_embed == 196 * 16 * 16 * 3 * d
    assert b.resnet == b.map_head == 0
    assert b.total == flops.forward_macs(spec)
    assert flops.step_flops(spec, 8, "train") == 6 * 8 * b.total
    assert flops.step_flops(spec, 8, "infer") == 2 * 8 * b.total
    gap = flops.macs_breakdown(spec.replace(classifier="gap", representation_size=128))
    assert gap.attention_scores == layers * 196 * 196 * d
    assert gap.pre_logits == d * 128 and gap.head == 128 * 1000


def jaxpr_macs(jaxpr: jax.extend.core.Jaxpr) -> int:
    """MACs of every dot_general and convolution of a jaxpr (sub-jaxprs included)."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
        elif eqn.primitive.name == "conv_general_dilated":
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
            kernel = eqn.invars[1].aval.shape
            per_output = kernel[rhs_spec[1]] * math.prod(kernel[i] for i in rhs_spec[2:])
            total += math.prod(eqn.outvars[0].aval.shape) * per_output
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += jaxpr_macs(sub)
    return total


@pytest.mark.parametrize("variant, image_size, options", [
    ("Ti/16", 64, {}),
    ("testing", 32, {"classifier": "gap", "representation_size": 48, "num_registers": 2}),
    ("testing", 32, {"classifier": "map", "num_registers": 1}),
    ("R+Ti/16", 64, {}),  # AugReg's hybrid: the ResNet's root block alone
    ("R50+B/16", 64, {}),  # 3 stages of bottleneck units, projections, strides
    ("R50+B/16", 48, {"classifier": "gap"}),  # odd feature-map sides: "SAME" rounds up
], ids=lambda v: str(v))
def test_macs_are_the_models_own_products(variant: str, image_size: int, options: dict):
    """The analytic count equals the MACs of every matrix product and convolution in the
    traced forward pass (exact: no compile, only shapes)."""
    spec = ViTSpec.from_variant(variant, image_size=image_size, num_classes=10, **options)
    model = models.VisionTransformer(spec)
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
    traced = jax.make_jaxpr(lambda v, x: model.apply(v, x))(params, images)
    assert flops.forward_macs(spec) == jaxpr_macs(traced.jaxpr)


@pytest.mark.parametrize("kwargs", [{}, {"classifier": "gap", "representation_size": 48}])
def test_macs_agree_with_xla_cost_analysis(kwargs: dict) -> None:
    """XLA counts 2 FLOPs per MAC of every dot, plus the elementwise work (LayerNorm,
    softmax, GELU, biases) that the analytic count leaves out: for Ti/16 that adds ~1.3%,
    so XLA's number must lie between 1× and 1.05× of 2 × analytic MACs."""
    batch, size, classes = 2, 64, 10
    model = models.create_model("Ti/16", num_classes=classes, **kwargs)
    images = jnp.zeros((batch, size, size, 3))
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), images[:1]))["params"]
    compiled = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(params, images).compile()
    cost = compiled.cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
    spec = ViTSpec.from_variant("Ti/16", image_size=size, num_classes=classes, **kwargs)
    assert 1.0 <= xla / (2 * batch * flops.forward_macs(spec)) <= 1.05


def test_end_to_end_both_frameworks(tmp_path, capsys) -> None:
    pytest.importorskip("torch")
    from benchmarks import speed  # vit_jax imports no torch: the twin joins here

    out = tmp_path / "bench.json"
    speed.main(["--variant", "testing", "--image-size", "32", "--batch-size", "2",
                    "--steps", "1", "--warmup", "0", "--repeats", "1",
                    "--frameworks", "jax,torch", "--peak-tflops", "1.0", "--json", str(out)])
    result = json.loads(out.read_text())
    assert "jax/torch" in capsys.readouterr().out
    assert result["flops"]["forward_macs_per_image"] > 0
    for fw in ("jax", "torch"):
        for mode in ("train", "infer"):
            r = result["results"][fw][mode]
            for key in ("tflops", "mfu", "first_step_s"):
                assert r[key] > 0, (fw, mode, key)
            assert r["step_s"]["median"] > 0 and r["images_per_s"]["median"] > 0
            assert result["flops"]["per_step"][mode] > 0
        assert result["ratios"]["jax/torch"]["train"] > 0
    jax_train = result["results"]["jax"]["train"]
    assert jax_train["compile_s"] > 0 and jax_train["xla_cost_analysis_flops"] > 0
    # Compiled once, never retraced.
    assert jax_train["traces_total"] == 1 and jax_train["retraces_after_first_step"] == 0
    assert result["results"]["jax"]["infer"]["retraces_after_first_step"] == 0
    assert result["process_max_rss_bytes"] > 0


def test_cli_rejects_unknown_framework() -> None:
    with pytest.raises(SystemExit):
        benchmark.main(["--variant", "testing", "--frameworks", "mxnet"])


def test_jax_only_with_a_remat_policy(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    benchmark.main(["--variant", "testing", "--image-size", "32", "--batch-size", "2",
                    "--steps", "1", "--warmup", "0", "--repeats", "1", "--mode", "train",
                    "--remat-policy", "dots", "--peak-tflops", "1.0", "--json", str(out)])
    result = json.loads(out.read_text())
    assert list(result["results"]) == ["jax"] and result["options"]["remat_policy"] == "dots"
    assert "remat_policy=dots" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # torch is timed by benchmarks.speed, not vit_jax
        benchmark.main(["--variant", "testing", "--frameworks", "jax,torch"])
