"""Few-shot linear evaluation: `python -m vit_jax.fewshot --checkpoint CKPT --dataset D`.

The paper's §4.1 "linear few-shot accuracies", computed as big_vision's
`evaluators/fewshot_lsr.py` (ridge regression on frozen pre-logits features; the method
is described in `vit_jax.tools.linear_fewshot`, whose `evaluate_fewshot` does the work).
CKPT is a workdir, an official `.npz` or a model directory; `--model NAME` takes a
released model by name instead. Prints one line per shot count and then the results as
JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np

from vit_core.errors import ConfigError, run_cli
from vit_jax import cli
from vit_jax.tools import linear_fewshot


def parse_shots(text: str) -> list[int]:
    """"1,5,10,25" -> [1, 5, 10, 25]; ConfigError for anything else."""
    try:
        shots = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--shots takes whole numbers separated by commas (e.g. 1,5,10,25), "
                          f"got {text!r}.") from None
    linear_fewshot.check_options(shots, 1, 1.0)
    return shots


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; user errors end in one 'error:' line and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m vit_jax.fewshot",
        description="Linear few-shot accuracy of a model's frozen pre-logits features "
                    "(paper §4.1, big_vision's fewshot_lsr): per shot count and seed, a "
                    "closed-form ridge regression to ±1 targets on k train images per class, "
                    "top-1 on the test split; prints the mean over seeds.",
        epilog="example: python -m vit_jax.fewshot --checkpoint runs/digits --shots 1,5,10")
    cli.add_model_args(parser)
    parser.add_argument("--dataset", default=None,
                        help="tfds name or folder:PATH (default: the workdir's dataset)")
    parser.add_argument("--data_dir", default=None, help="tfds data_dir")
    parser.add_argument("--train_split", default="train",
                        help="split the shots come from (default: %(default)s)")
    parser.add_argument("--test_split", default="test",
                        help="split to test on (default: %(default)s)")
    parser.add_argument("--shots", default=",".join(map(str, linear_fewshot.DEFAULT_SHOTS)),
                        help="shot counts, comma-separated (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=linear_fewshot.DEFAULT_SEEDS,
                        help="seeds to average (default: %(default)s)")
    parser.add_argument("--l2_reg", type=float, default=linear_fewshot.DEFAULT_L2_REG,
                        help="ridge penalty (default: 2^10, big_vision's)")
    parser.add_argument("--batch_size", type=int, default=64,
                        help="images per forward pass (default: %(default)s)")
    args = parser.parse_args(argv)
    cli.quiet_logs()

    def run() -> None:
        results = linear_fewshot.evaluate_fewshot(
            cli.checkpoint_arg(args), args.dataset, data_dir=args.data_dir,
            train_split=args.train_split, test_split=args.test_split,
            shots=parse_shots(args.shots), seeds=args.seeds, l2_reg=args.l2_reg,
            batch_size=args.batch_size, progress=True)
        for k, accs in results.items():
            seeds = ", ".join(f"{a:.4f}" for a in accs)
            print(f"{k:>3d}-shot: top-1 {np.mean(accs):.4f}  (seeds: {seeds})", flush=True)
        print(json.dumps({"mean": linear_fewshot.summarize(results),
                          "per_seed": {f"{k}shot": v for k, v in results.items()}}))

    run_cli(run)


if __name__ == "__main__":
    main()
