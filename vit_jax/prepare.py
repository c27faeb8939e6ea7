"""Prepare a dataset once, before training (training itself never downloads).

  python -m vit_jax.prepare cifar10 --data_dir ~/tensorflow_datasets
  python -m vit_jax.prepare imagenet2012 --data_dir /data/tfds --manual_dir /data/imagenet
  python -m vit_jax.prepare folder:/data/flowers      # checks the folder, writes nothing

A thin command over `vit_jax.data.dataset_info.prepare_dataset`, which calls tfds'
`download_and_prepare` from Python: tfds' own `tfds build` needs apache_beam, which this
project does not install. ImageNet cannot be downloaded automatically: put
ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from image-net.org) in --manual_dir.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from vit_core.errors import run_cli
from vit_jax import cli
from vit_jax.data import dataset_info


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command's flags (argv without the program name; None: sys.argv[1:])."""
    parser = argparse.ArgumentParser(
        prog="python -m vit_jax.prepare",
        description="Download and prepare a tensorflow-datasets dataset for training, or "
                    "check an image folder (folder:PATH).")
    parser.add_argument("name", help="a tfds name (cifar10, imagenet2012, ...) or folder:PATH")
    parser.add_argument("--data_dir", default=None,
                        help="tfds data_dir to prepare into (default: tfds' own, "
                             "~/tensorflow_datasets); use the same as --config.data_dir")
    parser.add_argument("--manual_dir", default=None,
                        help="folder with manually downloaded files (ImageNet's .tar files); "
                             "default: DATA_DIR/downloads/manual")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Prepares the dataset named on the command line; prints a line before and after."""
    args = parse_args(argv)
    cli.quiet_logs()

    def run() -> None:
        print(dataset_info.preparation_plan(args.name, args.data_dir), flush=True)
        start = time.time()
        info = dataset_info.prepare_dataset(args.name, args.data_dir,
                                            manual_dir=args.manual_dir,
                                            progress=sys.stderr.isatty())
        if info.summary:  # a folder: its classes, split sizes and held-out validation
            print(info.summary, flush=True)
        print(dataset_info.preparation_summary(args.name, info, time.time() - start),
              flush=True)

    run_cli(run)  # a UserError becomes one "error:" line, exit code 2


if __name__ == "__main__":
    main()
