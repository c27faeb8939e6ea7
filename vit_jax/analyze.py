"""The paper's analysis figures: `python -m vit_jax.analyze --checkpoint CKPT --out DIR`.

Writes Figure 7 of Dosovitskiy et al. 2020 (patch-embedding components, position-embedding
similarity, mean attention distance) and attention maps of a workdir or official `.npz`
(or, with `--model NAME`, a released model) as PNGs in DIR, with their numbers in
`analysis.json`. What each figure shows and how it
is computed: `vit_jax.tools.analysis`, whose `analyze` does the work.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from vit_core.errors import run_cli
from vit_jax import cli
from vit_jax.tools import analysis


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; user errors end in one 'error:' line and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m vit_jax.analyze",
        description="Write the paper's Figure 7 panels (principal components of the patch "
                    "embedding, position-embedding similarity, mean attention distance per "
                    "head and depth) and attention maps (Figure 6) of a checkpoint as PNGs.",
        epilog="example: python -m vit_jax.analyze --checkpoint runs/digits --out figures/")
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="image files for the attention figures (or use --dataset)")
    cli.add_model_args(parser)
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--dataset", default=None,
                        help="take the images from this tfds dataset (a workdir: its own "
                             "dataset when no images are given)")
    parser.add_argument("--split", default=None,
                        help="the dataset's split (default: the workdir's eval split, or test)")
    parser.add_argument("--num_images", type=int, default=analysis.DEFAULT_NUM_IMAGES,
                        help="dataset images averaged for the attention distance "
                             "(default: %(default)s)")
    parser.add_argument("--num_maps", type=int, default=analysis.DEFAULT_NUM_MAPS,
                        help="dataset images drawn as attention maps (default: %(default)s)")
    parser.add_argument("--data_dir", default=None, help="tfds data_dir")
    args = parser.parse_args(argv)
    cli.quiet_logs()

    def run() -> None:
        result = analysis.analyze(cli.checkpoint_arg(args), args.out, args.images,
                                  dataset=args.dataset, split=args.split,
                                  num_images=args.num_images, num_maps=args.num_maps,
                                  data_dir=args.data_dir)
        for file in result["files"]:
            print(f"wrote {os.path.join(args.out, file)}", flush=True)

    run_cli(run)


if __name__ == "__main__":
    main()
