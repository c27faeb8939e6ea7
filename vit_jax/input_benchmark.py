"""Input pipeline speed: training images decoded and augmented per second per CPU core.

    python -m vit_jax.input_benchmark --out input_benchmark.json

Writes ImageNet-shaped JPEGs once into a temporary tfds data_dir and runs the project's
real training pipeline on them, once per `--randaugment` setting, interleaved over
`--repeats`. What is measured and how to read the columns:
`vit_jax.tools.input_benchmarking`, whose `run_benchmark` does the work.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from vit_core.errors import run_cli
from vit_jax import cli
from vit_jax.tools import input_benchmarking


def _pair(text: str) -> tuple[int, float]:
    num_layers, magnitude = text.split(",")
    return int(num_layers), float(magnitude)


def parse_args(argv: list[str] | None = None) -> tuple[input_benchmarking.Options, str | None]:
    """The CLI flags → (Options, the --out path or None)."""
    d = input_benchmarking.Options()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=d.config, help="config file whose preprocessing "
                        "is measured (run from the repository root)")
    parser.add_argument("--images", type=int, default=d.num_images, help="JPEGs to write")
    parser.add_argument("--width", type=int, default=d.width)
    parser.add_argument("--height", type=int, default=d.height)
    parser.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality)
    parser.add_argument("--image-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--warmup", type=int, default=d.warmup, help="untimed batches")
    parser.add_argument("--batches", type=int, default=d.batches, help="timed batches")
    parser.add_argument("--repeats", type=int, default=d.repeats)
    parser.add_argument("--randaugment", type=_pair, action="append", metavar="N,M",
                        help="a setting to measure (repeatable); 0,10 is off; default: "
                        "0,10 2,10 2,15")
    parser.add_argument("--gpu-images-per-s", type=float, default=d.gpu_images_per_s,
                        help="a GPU's training speed, for the cores-per-GPU column")
    parser.add_argument("--data-dir", default=None, help="keep the source here (reused)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    a = parser.parse_args(argv)
    opts = input_benchmarking.Options(
                   config=a.config, num_images=a.images, width=a.width, height=a.height,
                   jpeg_quality=a.jpeg_quality, batch_size=a.batch_size, warmup=a.warmup,
                   batches=a.batches, repeats=a.repeats,
                   randaugment=tuple(a.randaugment) if a.randaugment else d.randaugment,
                   gpu_images_per_s=a.gpu_images_per_s, data_dir=a.data_dir,
                   image_size=a.image_size)
    return opts, a.out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark from CLI flags, prints the table, writes --out; returns the results."""
    opts, out = parse_args(argv)
    cli.quiet_logs()
    result = input_benchmarking.run_benchmark(opts)
    print(input_benchmarking.format_table(result))
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    run_cli(main)
