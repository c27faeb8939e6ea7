"""Speed of the real jitted train / inference steps (and, with benchmarks/, the PyTorch twin's).

    python -m vit_jax.benchmark --variant Ti/16 --batch-size 16 --mode both --json out.json
    python -m benchmarks.speed --variant Ti/16 --frameworks jax,torch --torch-compile

Times the jitted train step and inference forward, interleaved over repeats, with
analytic FLOP/s and MFU (what is timed and how: `vit_jax.tools.benchmarking`, whose
`run_benchmark` does the work). The command line first calls
`vit_jax.training.host_memory.retain_freed_memory` (as `vit_jax.train` does; it applies to
both frameworks, which share the process).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from typing import Any

from vit_core.errors import run_cli
from vit_jax.model import vit
from vit_jax.tools import benchmarking
from vit_jax.tools.benchmark_runners import RUNNERS, Options
from vit_jax.training.host_memory import retain_freed_memory


def parse_args(argv: list[str] | None = None, prog: str = "python -m vit_jax.benchmark",
               default_frameworks: str = "jax") -> tuple[Options, str | None]:
    """Parses the command line into `Options` and the --json path."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--variant", default="Ti/16", help="ViT variant (vit_jax/variants.py).")
    p.add_argument("--image-size", type=int, default=224, help="Square image side in pixels.")
    p.add_argument("--batch-size", type=int, default=16, help="Images per step.")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="Compute dtype; parameters stay float32 (torch: autocast).")
    p.add_argument("--mode", choices=("train", "infer", "both"), default="both",
                   help="Train step (fwd+bwd+AdamW), inference forward, or both.")
    p.add_argument("--attention", choices=("default", "xla", "cudnn"), default="default",
                   help="JAX attention (vit_jax/model/attention.py): default = vit_jax's softmax "
                        "attention with a hand-written backward; xla / cudnn = "
                        "jax.nn.dot_product_attention (cudnn: GPU flash kernel). PyTorch "
                        "always uses its default SDPA.")
    p.add_argument("--remat", action="store_true", help="JAX: recompute block activations.")
    p.add_argument("--remat-policy", default="default",
                   help=f"JAX: what a block saves, one of {', '.join(vit.REMAT_POLICIES)} "
                        "(config.model.remat_policy).")
    p.add_argument("--scan", action="store_true", help="JAX: nn.scan over the blocks.")
    p.add_argument("--steps", type=int, default=5, help="Timed steps per repeat.")
    p.add_argument("--warmup", type=int, default=2, help="Untimed steps after compiling.")
    p.add_argument("--repeats", type=int, default=3,
                   help="Interleaved repeats; the median and spread are over these.")
    p.add_argument("--frameworks", default=default_frameworks,
                   help="Comma list of: jax; with python -m benchmarks.speed also torch (eager "
                        "PyTorch).")
    p.add_argument("--torch-compile", action="store_true",
                   help="benchmarks.speed: also time PyTorch with torch.compile(model) "
                        "(framework torch-compile).")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="Device peak for MFU; default: a large matmul measured in this run.")
    p.add_argument("--num-classes", type=int, default=1000, help="Width of the head.")
    p.add_argument("--json", default=None, metavar="OUT", help="Write the result here.")
    a = p.parse_args(argv)
    frameworks = tuple(f.strip() for f in a.frameworks.split(",") if f.strip())
    opts = Options(
        variant=a.variant, image_size=a.image_size, batch_size=a.batch_size, dtype=a.dtype,
        mode=a.mode, attention=a.attention, remat=a.remat, remat_policy=a.remat_policy,
        scan=a.scan, steps=a.steps,
        warmup=a.warmup, repeats=a.repeats, frameworks=frameworks,
        torch_compile=a.torch_compile, peak_tflops=a.peak_tflops, num_classes=a.num_classes)
    return opts, a.json


def main(argv: list[str] | None = None,
         factories: Mapping[str, benchmarking.RunnerFactory] = RUNNERS,
         prog: str = "python -m vit_jax.benchmark", default_frameworks: str = "jax",
         ) -> dict[str, Any]:
    """CLI entry point: runs, prints the table, writes --json.

    Args:
      argv: the command line (default: sys.argv).
      factories, prog, default_frameworks: what `python -m benchmarks.speed` changes to add
        the PyTorch twin.

    Returns:
      The result of `run_benchmark`.
    """
    host_memory_retained = retain_freed_memory()  # before JAX's CPU client exists
    # Two frameworks share one GPU: JAX must not grab 75% of its memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    opts, out = parse_args(argv, prog, default_frameworks)
    result = run_cli(lambda: benchmarking.run_benchmark(opts, factories))
    result["environment"]["host_memory_retained"] = host_memory_retained
    benchmarking.print_table(result)
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
