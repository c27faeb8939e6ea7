"""Export a trained run: `python -m vit_jax.export WORKDIR OUT [--step N] [--format F]`.

Writes the newest (or `--step N`) checkpoint of a training workdir as an official `.npz`
(with its `.spec.json`), a timm `.safetensors` state dict, or a Hugging Face directory;
the format follows OUT unless `--format` says. The formats and how to load each:
`vit_jax.weights.exporting`, whose `export` does the work (numpy only, no torch).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from vit_core.errors import run_cli
from vit_jax import cli
from vit_jax.weights import exporting


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; user errors end in one 'error:' line and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m vit_jax.export",
        description="Write a training workdir's checkpoint as the official .npz, a timm "
                    ".safetensors state dict, or a Hugging Face directory.",
        epilog="examples:\n  python -m vit_jax.export runs/x x.npz\n"
               "  python -m vit_jax.export runs/x x.safetensors --step 500\n"
               "  python -m vit_jax.export runs/x x-hf   # a directory",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", help="a training workdir (python -m vit_jax.train --workdir)")
    parser.add_argument("out", help="output: .npz, .safetensors (timm), or a directory (HF)")
    parser.add_argument("--step", type=int, default=None,
                        help="checkpoint step (default: the newest)")
    parser.add_argument("--format", choices=exporting.FORMATS, default=None,
                        help="default: by OUT's extension")
    args = parser.parse_args(argv)

    cli.quiet_logs()

    def run() -> None:
        _, line = exporting.export(args.workdir, args.out, step=args.step, fmt=args.format)
        print(line, flush=True)

    run_cli(run)


if __name__ == "__main__":
    main()
