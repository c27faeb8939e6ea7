"""Train-step memory of vit_jax and of the PyTorch twin side by side, nothing executed.

    python -m benchmarks.memory --variant B/16 --batch-size 256 --dtype bfloat16,float32 \
        --scan false,true --remat-policy default,none,dots --json out.json

Same flags as `python -m vit_jax.memory` (XLA's buffer assignment of the compiled train
step and the residuals JAX saves, per setting); this adds, per dtype, what autograd saves
for the twin's backward pass (`vit_torch.benchmark.saved_tensors`, on the meta device).
Run from the repository root.
"""

from __future__ import annotations

import json
from typing import Any

import jax

from vit_core.errors import run_cli
from vit_jax import memory
from vit_jax.tools import step_memory
from vit_torch.benchmark import saved_tensors

GIB = step_memory.GIB


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Prints the JAX table, the twin's saved tensors per dtype, and writes --json."""
    a = memory.parse_args(argv)
    settings = memory.settings_from_args(a)
    print(f"{a.variant} batch {a.batch_size} {a.image_size}px, train step with AdamW; GiB")
    print("JAX: XLA's buffer assignment of the compiled step; saved = autodiff residuals")
    print(step_memory.HEADER)
    jax_results = []
    for setting in settings:
        jax_results.append(step_memory.measure(setting, residuals=not a.no_residuals))
        print(step_memory.format_row(jax_results[-1]), flush=True)
    torch_results = {}
    print("\nPyTorch twin: tensors autograd saves (meta device, each storage once)")
    print("dtype        saved s/block  count")
    for dtype in dict.fromkeys(s.dtype for s in settings):
        r = saved_tensors(a.variant, a.batch_size, a.image_size, dtype=dtype)
        torch_results[dtype] = r
        print(f"{dtype:9s} {r['total'] / GIB:8.2f} {r['per_block'] / GIB:7.3f} {r['count']:6d}")
    if not a.no_residuals:
        for m in jax_results:
            step_memory.print_largest(m)
    for dtype, r in torch_results.items():
        print(f"\nPyTorch twin, largest saved tensors: {dtype}")
        for row in r["largest"]:
            shape = "x".join(map(str, row["shape"]))
            print(f"  {row['count']:3d} x {row['bytes'] / GIB:6.3f} GiB  {row['dtype']:8s} "
                  f"{shape:22s} {row['where']}")
    result = {"jax": jax_results, "torch_saved": torch_results,
              "versions": {"jax": jax.__version__, "torch": __import__("torch").__version__},
              "backend": jax.default_backend()}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {a.json}")
    return result


if __name__ == "__main__":
    run_cli(main)
