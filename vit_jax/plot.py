"""Training curves: `python -m vit_jax.plot WORKDIR --out curves.png`.

Draws a workdir's `history.jsonl` (the loss and the accuracy, training and every
evaluated split; the few-shot accuracies when the run measured them) with
`vit_jax.tools.curves.plot_curves`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from vit_core.errors import run_cli
from vit_jax.tools import curves


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; user errors end in one 'error:' line and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m vit_jax.plot",
        description="Plot the training curves of a workdir from its history.jsonl: train loss "
                    "and batch accuracy, the loss and top-1 accuracy of every evaluated "
                    "split, and the linear few-shot accuracies when the run measured them.",
        epilog="example: python -m vit_jax.plot runs/digits --out curves.png")
    parser.add_argument("workdir", help="a training workdir (python -m vit_jax.train --workdir)")
    parser.add_argument("--out", required=True, help="the PNG file to write")
    parser.add_argument("--title", default=None, help="figure title (default: the workdir name)")
    args = parser.parse_args(argv)

    def run() -> None:
        curves.plot_curves(args.workdir, args.out, args.title)
        print(f"wrote {args.out}", flush=True)

    run_cli(run)


if __name__ == "__main__":
    main()
