"""Classify image files: `python -m vit_jax.predict --checkpoint CKPT IMAGE [IMAGE ...]`.

CKPT is a training workdir, an official-layout `.npz` or a Hugging Face / timm model
directory (`vit_jax.weights.loading`); `--model NAME` instead takes a released model by
name (`vit_jax.weights.pretrained`, downloaded into the cache on first use).
Images of any size up to 89.5 megapixels (a larger one is refused as a possible
decompression bomb, `vit_jax.data.image_check.decode`) and any mode (PNG, JPEG, ...;
grayscale, RGB or RGBA) are decoded in full, then go through the eval transform of the
input pipeline: short side resized to image_size / eval_resize_ratio,
centre crop, pixels scaled to [-1, 1]. The ratio is the workdir config's
`eval_resize_ratio` (0.875 for a `.npz`, as for the released models). For each image
one line is printed:

  digit.png: 7 (0.9812) | 1 (0.0090) | 9 (0.0041) | 4 (0.0022) | 2 (0.0014)

Class names come from the dataset's tfds metadata (the workdir's dataset, or --dataset
for a `.npz`); without it the class indices are printed. The work is
`vit_jax.tools.prediction.predict`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from vit_core.errors import run_cli
from vit_jax import cli
from vit_jax.tools import prediction


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of `python -m vit_jax.predict`."""
    parser = argparse.ArgumentParser(
        prog="python -m vit_jax.predict",
        description="Print the top-k classes and their softmax probabilities for each image, "
                    "one line per image. Images of any size are resized and centre-cropped "
                    "as in evaluation.",
        epilog="example: python -m vit_jax.predict --checkpoint runs/digits digit.png")
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (PNG, JPEG, ...; grayscale, RGB or RGBA)")
    cli.add_checkpoint_args(parser)
    parser.add_argument("--top_k", type=int, default=prediction.DEFAULT_TOP_K,
                        help="classes to print per image (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; user errors end in one 'error:' line and exit code 2."""
    args = parse_args(argv)
    cli.quiet_logs()

    def run() -> None:
        results = prediction.predict(cli.checkpoint_arg(args), args.images, args.top_k,
                                     dataset=args.dataset, data_dir=args.data_dir)
        for path, top in zip(args.images, results, strict=True):
            print(prediction.format_prediction(path, top), flush=True)

    run_cli(run)


if __name__ == "__main__":
    main()
