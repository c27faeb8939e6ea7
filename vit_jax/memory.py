"""What a train step holds in memory, read from the compiled step: nothing is executed.

    python -m vit_jax.memory --variant B/16 --batch-size 256 --dtype bfloat16,float32 \
        --scan false,true --remat-policy default,dots,none

For every combination of the comma lists it prints, side by side, XLA's buffer
assignment of the real train step and the residuals autodiff saves for the backward pass
(what each column means: `vit_jax.tools.step_memory`, whose `measure` does the work).
`python -m benchmarks.memory` adds the PyTorch twin (vit_jax never imports torch).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import jax

from vit_core.errors import ConfigError, run_cli
from vit_jax.model import vit
from vit_jax.tools import step_memory


def _bools(text: str) -> list[bool]:
    table = {"true": True, "false": False, "1": True, "0": False}
    try:
        return [table[t.strip().lower()] for t in text.split(",")]
    except KeyError as e:
        raise ConfigError(f"--scan takes a comma list of true/false, got {text!r}.") from e


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see `--help`)."""
    p = argparse.ArgumentParser(
        prog="python -m vit_jax.memory", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--variant", default="B/16", help="ViT variant (vit_core/variants.py).")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--dtype", default="bfloat16", help="Comma list of float32, bfloat16.")
    p.add_argument("--scan", default="false", help="Comma list of true, false.")
    p.add_argument("--remat-policy", default="default",
                   help=f"Comma list of {', '.join(vit.REMAT_POLICIES)}.")
    p.add_argument("--attention", default="default", help="Comma list of default, xla, cudnn.")
    p.add_argument("--no-residuals", action="store_true",
                   help="Only XLA's analysis (skips tracing the vjp).")
    p.add_argument("--json", default=None, metavar="OUT", help="Write the results here.")
    return p.parse_args(argv)


def settings_from_args(a: argparse.Namespace) -> list[step_memory.Setting]:
    """The settings a parsed command line asks for (options checked)."""
    dtypes = [d.strip() for d in a.dtype.split(",")]
    policies = [r.strip() for r in a.remat_policy.split(",")]
    attentions = [t.strip() for t in a.attention.split(",")]
    for name, values, known in (("--dtype", dtypes, ("float32", "bfloat16")),
                                ("--remat-policy", policies, vit.REMAT_POLICIES),
                                ("--attention", attentions, ("default", "xla", "cudnn"))):
        bad = [v for v in values if v not in known]
        if bad:
            raise ConfigError(f"{name}: unknown {bad}; known: {list(known)}.")
    return step_memory.settings_from_lists(a.variant, a.batch_size, a.image_size, dtypes,
                                           _bools(a.scan), policies, attentions)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Compiles each setting, prints the table and the largest residuals, writes --json."""
    a = parse_args(argv)
    settings = settings_from_args(a)
    print(f"{a.variant} batch {a.batch_size} {a.image_size}px, train step with AdamW; GiB "
          "(XLA's buffer assignment; saved = autodiff residuals)")
    print(step_memory.HEADER)
    results = []
    for setting in settings:
        results.append(step_memory.measure(setting, residuals=not a.no_residuals))
        print(step_memory.format_row(results[-1]), flush=True)
    if not a.no_residuals:
        for m in results:
            step_memory.print_largest(m)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"results": results, "jax": jax.__version__,
                       "backend": jax.default_backend()}, f, indent=2)
        print(f"wrote {a.json}")
    return results


if __name__ == "__main__":
    run_cli(main)
