"""The memory benchmark (vit_jax.memory, benchmarks.memory) and the remat policies."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_core.errors import ConfigError
from vit_jax import memory
from vit_jax.model import vit as models
from vit_jax.tools import step_memory

TINY = dict(variant="testing", batch_size=2, image_size=16, num_classes=10)


def test_memory_of_the_compiled_step_and_the_residuals() -> None:
    m = step_memory.measure(step_memory.Setting(**TINY, dtype="float32"))
    x, r = m["xla"], m["residuals"]
    assert x["arguments"] > 0 and x["temporaries"] > 0 and x["flops"] > 0
    assert x["peak"] == x["arguments"] + x["outputs"] + x["temporaries"] - x["aliased"]
    assert x["aliased"] > 0  # the state is donated
    # testing: 2 blocks of width 32, MLP 64, 4 heads; 1 + (16/4)² = 17 tokens.
    assert r["per_block"] * 2 == r["blocks"] and 0 < r["blocks"] < r["total"]
    totals = [g["bytes"] * g["count"] for g in r["largest"]]  # groups, most bytes first
    assert totals == sorted(totals, reverse=True)
    in_blocks = [g for g in r["largest"] if g["block"]]
    assert in_blocks and all(g["count"] % 2 == 0 for g in in_blocks)  # as many per block
    assert any("_softmax_attention_fwd" in g["where"] for g in in_blocks)
    # bfloat16 residuals are smaller than float32's.
    bf16 = step_memory.saved_residuals(step_memory.Setting(**TINY, dtype="bfloat16"))
    assert bf16["blocks"] < r["blocks"]


@pytest.mark.slow
def test_remat_policies_save_less_and_cost_more() -> None:
    measured = {p: step_memory.measure(step_memory.Setting(**TINY, remat_policy=p, dtype="float32"))
                for p in models.REMAT_POLICIES}
    saved = {p: m["residuals"]["blocks"] for p, m in measured.items()}
    assert saved["none"] < saved["dots"] < saved["default"]
    flops = {p: m["xla"]["flops"] for p, m in measured.items()}
    assert flops["none"] > flops["default"]


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [{"remat_policy": "none"}, {"remat_policy": "dots"},
                                    {"remat": True}, {"remat_policy": "dots", "scan": True}])
def test_remat_policies_compute_the_same_gradients(kwargs: dict) -> None:
    images = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
    labels = jnp.array([1, 3])

    def grads(model, params):
        def loss(p):
            logits = model.apply({"params": p}, images, train=True,
                                 rngs={"dropout": jax.random.key(2)})
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()
        return jax.jit(jax.grad(loss))(params)

    scan = kwargs.get("scan", False)
    base = models.create_model("testing", num_classes=5, scan=scan)
    params = base.init(jax.random.key(0), images)["params"]
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(3), p.shape),
                          params)  # non-zero head and class token
    expected = grads(base, params)
    got = grads(models.create_model("testing", num_classes=5, **kwargs), params)
    for (path, g), e in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected),
                            strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=str(path))


def test_unknown_remat_policy_is_a_config_error() -> None:
    model = models.create_model("testing", num_classes=5, remat_policy="some")
    with pytest.raises(ConfigError, match="remat_policy"):
        model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ConfigError, match="--remat-policy"):
        memory.settings_from_args(memory.parse_args(["--remat-policy", "dots,some"]))


@pytest.mark.slow
def test_cli_prints_the_table_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "mem.json"
    memory.main(["--variant", "testing", "--batch-size", "2", "--image-size", "16",
                 "--dtype", "float32", "--scan", "false,true", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "largest saved arrays" in printed and "temps" in printed
    rows = json.loads(out.read_text())["results"]
    assert [r["setting"]["scan"] for r in rows] == [False, True]


@pytest.mark.slow
def test_torch_twin_saved_tensors_side_by_side(tmp_path, capsys) -> None:
    pytest.importorskip("torch")
    from benchmarks import memory as both
    from vit_torch.benchmark import saved_tensors

    f32 = saved_tensors("testing", 2, 16, dtype="float32", num_classes=10)
    bf16 = saved_tensors("testing", 2, 16, dtype="bfloat16", num_classes=10)
    assert 0 < f32["blocks"] < f32["total"] and f32["per_block"] * 2 == f32["blocks"]
    assert bf16["total"] < f32["total"]
    assert f32["largest"][0]["where"].startswith("blocks.")
    out = tmp_path / "both.json"
    both.main(["--variant", "testing", "--batch-size", "2", "--image-size", "16",
               "--dtype", "float32", "--no-residuals", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["torch_saved"]["float32"]["total"] == saved_tensors(
        "testing", 2, 16, dtype="float32", num_classes=1000)["total"]
    assert "PyTorch twin" in capsys.readouterr().out


@pytest.mark.slow
def test_vit_jax_imports_no_torch() -> None:
    code = ("import importlib, pkgutil, sys, vit_jax\n"
            "for m in pkgutil.walk_packages(vit_jax.__path__, 'vit_jax.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(sorted(n for n in sys.modules if n == 'torch' or n.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert out.strip().endswith("[]"), out
