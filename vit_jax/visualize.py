"""Attention maps: `python -m vit_jax.visualize --checkpoint CKPT IMAGE --out attn.png`.

One row per image: the input titled with the top-1 class, the last block's attention per
head and the attention rollout over all blocks (Abnar & Zuidema 2020). How the maps are
computed and drawn: `vit_jax.tools.attention_maps`, whose `visualize` does the work.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from vit_core.errors import run_cli
from vit_jax import cli
from vit_jax.tools import attention_maps


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; user errors end in one 'error:' line and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m vit_jax.visualize",
        description="Draw where a ViT looks: per image a row with the input (titled with the "
                    "top-1 class and its probability), the last block's attention of the "
                    "class token per head (mean over tokens for a 'gap' model) and the "
                    "attention rollout over all blocks, upsampled over the image.",
        epilog="example: python -m vit_jax.visualize --checkpoint runs/digits digit.png "
               "--out attn.png")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    cli.add_checkpoint_args(parser)
    parser.add_argument("--out", required=True, help="the PNG file to write")
    parser.add_argument("--panel_size", type=int, default=attention_maps.DEFAULT_PANEL_PX,
                        help="side of each panel in pixels (default: %(default)s)")
    args = parser.parse_args(argv)
    cli.quiet_logs()

    def run() -> None:
        attention_maps.visualize(cli.checkpoint_arg(args), args.images, args.out,
                                 args.panel_size, dataset=args.dataset, data_dir=args.data_dir)
        print(f"wrote {args.out}", flush=True)

    run_cli(run)


if __name__ == "__main__":
    main()
