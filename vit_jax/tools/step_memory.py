"""What a train step holds in memory, read from the compiled step: nothing is executed.

The library of `python -m vit_jax.memory`; for one `Setting` it measures:

* XLA's buffer assignment of the real train step (`vit_jax.training.steps.make_train_step`:
  forward, backward, clip, AdamW; state donated), compiled from `jax.ShapeDtypeStruct`s
  (`jax.jit(step).lower(...).compile().memory_analysis()`): arguments, outputs,
  temporaries, and the peak = arguments + outputs + temporaries − aliased (donated) bytes.
* The residuals autodiff saves for the backward pass of the loss (the vjp's residual
  outputs, as `jax.ad_checkpoint.print_saved_residuals` lists them): their total, the
  share of the blocks (found by the `encoderblock` name in the producing equation's name
  stack) and the largest arrays with the line that made them.

The PyTorch twin's saved tensors are counted by `vit_torch.benchmark`; `python -m
benchmarks.memory` prints both frameworks in one table (vit_jax never imports torch).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import source_info_util

from configs import default as default_config
from vit_jax.model import vit
from vit_jax.training import optim, steps
from vit_jax.training.state import TrainState

GIB = 2**30
_BLOCK = re.compile(r"encoderblock(_\d+)?")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One model and step configuration whose memory is read.

    Attributes:
      variant, batch_size, image_size, num_classes: the model and batch.
      dtype: compute dtype, "float32" or "bfloat16" (parameters stay float32).
      scan: `nn.scan` over the blocks.
      remat_policy: `config.model.remat_policy` (see `vit_jax.model.vit.REMAT_POLICIES`).
      attention: `config.model.attention_impl` ("default" = None, "xla", "cudnn").
    """

    variant: str = "B/16"
    batch_size: int = 256
    image_size: int = 224
    num_classes: int = 1000
    dtype: str = "bfloat16"
    scan: bool = False
    remat_policy: str = "default"
    attention: str = "default"

    def config(self) -> Any:
        """The training config of this setting (the benchmark's AdamW with clipping)."""
        config = default_config.get_config()
        m = config.model
        m.variant, m.dtype, m.scan, m.remat_policy = (
            self.variant, self.dtype, self.scan, self.remat_policy)
        m.attention_impl = None if self.attention == "default" else self.attention
        config.image_size, config.batch_size = self.image_size, self.batch_size
        config.optimizer, config.weight_decay, config.grad_clip_norm = "adamw", 1e-4, 1.0
        return config


def _shapes(setting: Setting) -> tuple[Any, Any, Any, Any]:
    """The model, step, state shapes and batch shapes of a setting (nothing allocated)."""
    config = setting.config()
    model = vit.model_from_config(config.model, setting.num_classes, config.image_size)
    tx, schedule = optim.create_optimizer(config, total_steps=1_000_000)
    state = jax.eval_shape(lambda: TrainState.create(model, tx, config))
    b, s = setting.batch_size, setting.image_size
    batch = {"image": jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32),  # (B, H, W, 3)
             "label": jax.ShapeDtypeStruct((b,), jnp.int32)}  # (B,)
    return model, steps.make_train_step(model, tx, schedule, config), state, batch


def compiled_memory(setting: Setting) -> dict[str, int]:
    """XLA's memory analysis of the compiled train step (the state donated).

    Args:
      setting: what to compile.

    Returns:
      Bytes: "arguments", "outputs", "temporaries", "aliased" (outputs written into
      donated arguments), "code" and "peak" (= arguments + outputs + temporaries − aliased,
      what the step needs at once), and "flops" from XLA's cost analysis.
    """
    _, train_step, state, batch = _shapes(setting)
    compiled = jax.jit(train_step, donate_argnums=0).lower(state, batch).compile()
    mem = compiled.memory_analysis()
    out = {"arguments": int(mem.argument_size_in_bytes), "outputs": int(mem.output_size_in_bytes),
           "temporaries": int(mem.temp_size_in_bytes), "aliased": int(mem.alias_size_in_bytes),
           "code": int(mem.generated_code_size_in_bytes)}
    out["peak"] = out["arguments"] + out["outputs"] + out["temporaries"] - out["aliased"]
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    out["flops"] = int(cost.get("flops", 0)) if cost else 0
    return out


def _summarize(eqn: Any) -> str:
    """`file:line (function)` of the user frame that made an equation."""
    # JAX's own summary (what print_saved_residuals prints); no public API gives it.
    where = source_info_util.summarize(eqn.source_info)
    return f"{eqn.primitive.name} at {where.rsplit('/', 1)[-1]}"


def saved_residuals(setting: Setting, top: int = 8) -> dict[str, Any]:
    """The arrays autodiff keeps from the forward pass of the loss for its backward pass.

    The residuals are the outputs of `jax.vjp(loss, params, images)` that the backward
    function closes over (the same list as `jax.ad_checkpoint.print_saved_residuals`),
    each counted once. Parameters that are saved (kernels used in the backward) count too.

    Args:
      setting: the model and batch.
      top: how many of the largest arrays to name.

    Returns:
      {"total": bytes, "blocks": bytes made inside the encoder blocks, "per_block": blocks /
      num_layers, "count": arrays, "largest": [{"shape", "dtype", "bytes", "count", "where",
      "block"}]}, the largest grouped by shape, dtype and the line that made them.
    """
    model, _, state, batch = _shapes(setting)

    def loss(params, images):  # the train step's forward (dropout off: deterministic)
        logits = model.apply({"params": params}, images, train=True,
                             rngs={"dropout": jax.random.key(0)})  # (B, classes)
        return -jax.nn.log_softmax(logits).mean()

    jaxpr, out_shape = jax.make_jaxpr(lambda p, x: jax.vjp(loss, p, x), return_shape=True)(
        state.params, batch["image"])
    num_res = len(jax.tree.leaves(out_shape[1]))
    res_vars = jaxpr.jaxpr.outvars[len(jaxpr.jaxpr.outvars) - num_res:]
    producers = {v: eqn for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars}
    invars = set(jaxpr.jaxpr.invars)
    seen, rows = set(), []
    for v in res_vars:
        if not hasattr(v, "aval") or v in seen or not hasattr(v.aval, "shape"):
            continue
        seen.add(v)
        nbytes = int(np.prod(v.aval.shape)) * v.aval.dtype.itemsize
        eqn = producers.get(v)
        if eqn is None:
            where, block = ("an argument" if v in invars else "a constant"), False
        else:
            where = _summarize(eqn)
            # Under nn.scan the blocks' residuals are the scan's stacked outputs.
            block = (eqn.primitive.name == "scan"
                     or bool(_BLOCK.search(str(eqn.source_info.name_stack))))
        rows.append({"shape": list(v.aval.shape), "dtype": str(v.aval.dtype), "bytes": nbytes,
                     "where": where, "block": block})
    total = sum(r["bytes"] for r in rows)
    blocks = sum(r["bytes"] for r in rows if r["block"])
    groups: dict[tuple, dict[str, Any]] = {}  # one row per (shape, dtype, line): the blocks'
    for r in rows:
        key = (tuple(r["shape"]), r["dtype"], r["where"])
        groups.setdefault(key, {**r, "count": 0})["count"] += 1
    largest = sorted(groups.values(), key=lambda g: -g["bytes"] * g["count"])[:top]
    return {"total": total, "blocks": blocks, "per_block": blocks // model.num_layers,
            "count": len(rows), "largest": largest}


def measure(setting: Setting, residuals: bool = True) -> dict[str, Any]:
    """`compiled_memory` and (optionally) `saved_residuals` of one setting."""
    out: dict[str, Any] = {"setting": dataclasses.asdict(setting),
                           "xla": compiled_memory(setting)}
    if residuals:
        out["residuals"] = saved_residuals(setting)
    return out


def settings_from_lists(
    variant: str, batch_size: int, image_size: int, dtypes: Sequence[str],
    scans: Sequence[bool], remat_policies: Sequence[str], attentions: Sequence[str],
) -> list[Setting]:
    """Every combination of the listed options, in a stable order."""
    return [Setting(variant=variant, batch_size=batch_size, image_size=image_size, dtype=d,
                    scan=s, remat_policy=r, attention=a)
            for d, s, r, a in itertools.product(dtypes, scans, remat_policies, attentions)]


def format_row(m: dict[str, Any]) -> str:
    """One line of the side-by-side table (GiB)."""
    s, x = m["setting"], m["xla"]
    res = m.get("residuals")
    cells = [f"{s['dtype']:9s}", f"{s['scan']!s:5s}", f"{s['remat_policy']:8s}",
             f"{s['attention']:8s}", f"{x['arguments'] / GIB:6.2f}", f"{x['outputs'] / GIB:6.2f}",
             f"{x['temporaries'] / GIB:7.2f}", f"{x['peak'] / GIB:7.2f}",
             f"{x['flops'] / 1e12:7.2f}"]
    if res:
        cells += [f"{res['total'] / GIB:7.2f}", f"{res['per_block'] / GIB:7.3f}"]
    return " ".join(cells)


HEADER = ("dtype     scan  remat    attn       args    outs   temps    peak TFLOP/s "
          "  saved s/block")


def print_largest(m: dict[str, Any]) -> None:
    """The largest saved arrays of one setting."""
    s = m["setting"]
    print(f"\nlargest saved arrays: {s['dtype']} scan={s['scan']} remat={s['remat_policy']} "
          f"attention={s['attention']}")
    for r in m["residuals"]["largest"]:
        shape = "x".join(map(str, r["shape"]))
        print(f"  {r['count']:3d} x {r['bytes'] / GIB:6.3f} GiB  {r['dtype']:8s} {shape:22s} "
              f"{r['where']}")
