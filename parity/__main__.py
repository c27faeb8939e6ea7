"""`python -m parity`: the measured Flax ⇄ PyTorch differences, as markdown tables.

    python -m parity                          # every case (~2 min on 2 CPU cores)
    python -m parity --cases testing Ti/16    # a subset
    python -m parity --markdown docs/parity.md

Every number comes from `parity.harness` / `parity.training`, the code `pytest parity/`
asserts on; the bounds printed are the ones the tests use. Columns marked "rel" are
max |Δ| / max |reference| of the tensor, the measure every bound is stated in; "abs" is
max |Δ| alone, for scale, and has no bound.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from parity import cases, harness, recipe, training
from parity.cases import Case


def _e(x: float) -> str:
    return f"{x:.1e}"


def _worst(values: dict[str, float]) -> tuple[str, float]:
    return max(values.items(), key=lambda kv: kv[1])


def forward_table(selected: Sequence[Case]) -> list[str]:
    """One row per case: float32 logits/intermediates (worst of both directions) and, for
    the training cases, gradients and optimizer steps."""
    lines = [
        "| case | images | logits abs (max abs Δ) | logits rel (bound "
        f"{_e(harness.LOGITS_REL)}) | worst intermediate rel (bound {_e(harness.FEATURE_REL)}) "
        f"| grads rel (bound {_e(training.GRAD_REL)}) | AdamW step same / own grads (rel to "
        "step) | SGD step same / own (rel to step) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in selected:
        t0 = time.perf_counter()
        pairs = [harness.forward_flax_to_torch(case), harness.forward_torch_to_flax(case)]
        name, feat = _worst({k: v for p in pairs for k, v in p.feature_rel().items()})
        row = [case.name, f"{case.batch}×{case.image_size}²",
               _e(max(p.logits_abs for p in pairs)), _e(max(p.logits_rel for p in pairs)),
               f"{_e(feat)} ({name})"]
        if case.train:
            tr = training.measure_training(case)
            row.append(_e(max(tr.grad_rel().values())))
            for opt in training.OPTIMIZERS:
                same, own = (max(tr.step_rel(opt, s).values()) for s in (True, False))
                row.append(f"{_e(same)} / {_e(own)}")
        else:
            row += ["—"] * 3
        lines.append("| " + " | ".join(row) + " |")
        print(f"  {case.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return lines


def resize_table() -> list[str]:
    """Weights made at 224, position embedding resized to 384 by each framework."""
    lines = [f"| case | logits abs (max abs Δ) | logits rel (bound {_e(harness.LOGITS_REL)}) "
             f"| worst intermediate rel (bound {_e(harness.FEATURE_REL)}) |",
             "|---|---|---|---|"]
    for case in cases.RESIZE_CASES:
        pair = harness.measure_resize(case).pair
        name, feat = pair.worst_feature()
        lines.append(f"| {case.name} {case.image_size}→{cases.RESIZE_TO} | "
                     f"{_e(pair.logits_abs)} | {_e(pair.logits_rel)} | {_e(feat)} ({name}) |")
    return lines


def bf16_table() -> list[str]:
    """bfloat16 compute against float32 and against each other (logits, rel)."""
    lines = ["| case | JAX bf16 vs f32 (rel) | torch bf16 autocast vs f32 (rel) | "
             "JAX bf16 vs torch bf16 (rel to f32 logits) |",
             "|---|---|---|---|"]
    for case in cases.BF16_CASES:
        r = harness.measure_bf16(case)
        lines.append(f"| {case.name} | {_e(r.jax_vs_f32)} | {_e(r.torch_vs_f32)} | "
                     f"{_e(r.jax_vs_torch)} |")
    return lines


def recipe_lines() -> list[str]:
    """Per recipe case: the largest loss-curve and end-of-run parameter differences."""
    lines = []
    for name in recipe.CASES:
        run = recipe.measure_recipe(name)
        lines.append(f"- {name}: largest loss-curve difference {_e(run.loss_rel().max())} "
                     f"(bound {_e(recipe.LOSS_REL)}), parameters "
                     f"{_e(max(run.param_rel().values()))} of their movement beyond "
                     f"{recipe.ROUND_ULPS} ulps "
                     f"(bound {_e(recipe.PARAM_REL)})")
    return lines


def report(selected: Sequence[Case], extras: bool = True) -> str:
    """The whole report as markdown."""
    bc = training.adam_bias_correction_rel()
    parts = [
        "## Flax ⇄ PyTorch parity (float32, CPU)",
        "",
        "Random weights at their init scale (zero/constant leaves randomised), random "
        "images in [-1, 1]; Flax → npz → torch and torch → npz → Flax, worst of both. "
        "rel: max |Δ| / max |reference| per tensor (what the bounds bound); abs: max |Δ| "
        "(no bound, for scale). Steps: weight difference "
        "beyond 2 float32 ulps, relative to the step (AdamW: one step on each "
        "framework's own gradients where |g| ≥ 1e-4, two steps on the same gradients).",
        "",
        *forward_table(selected),
        "",
        f"Bounds (tests, all rel): logits {_e(harness.LOGITS_REL)}, intermediates "
        f"{_e(harness.FEATURE_REL)}, grads {_e(training.GRAD_REL)}, AdamW same "
        f"{_e(training.STEP_REL['adamw'])} (optax's float32 bias correction alone: {_e(bc)}) "
        f"/ own {_e(training.OWN_STEP_REL['adamw'])}, SGD same "
        f"{_e(training.STEP_REL['sgd'])} / own {_e(training.OWN_STEP_REL['sgd'])}.",
    ]
    parts += ["", "### Training recipe, 20 steps (`parity.recipe`)", "", *recipe_lines()]
    if extras:
        parts += ["", f"### Position-embedding resize (224 → {cases.RESIZE_TO})", "",
                  *resize_table(), "", "### bfloat16 compute (logits)", "", *bf16_table(), "",
                  f"Bounds (tests, rel): bf16 vs f32 and JAX vs torch "
                  f"{_e(harness.BF16_REL)}."]
    return "\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Parses flags, prints the report and optionally writes it as markdown."""
    parser = argparse.ArgumentParser(prog="python -m parity", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", metavar="NAME",
                        choices=list(cases.CASES_BY_NAME),
                        help=f"case names (default: all): {', '.join(cases.CASES_BY_NAME)}")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report to FILE")
    parser.add_argument("--no-extras", action="store_true",
                        help="skip the resize and bfloat16 tables")
    args = parser.parse_args(argv)
    selected = [cases.CASES_BY_NAME[n] for n in args.cases] if args.cases else cases.CASES
    text = report(selected, extras=not args.no_extras)
    print(text, end="")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
