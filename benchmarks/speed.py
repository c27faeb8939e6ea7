"""`python -m vit_jax.benchmark` with the PyTorch twin added: both frameworks in one run.

    python -m benchmarks.speed --variant Ti/16 --batch-size 16 --repeats 5 --torch-compile

Same flags and JSON as `python -m vit_jax.benchmark --help`; `--frameworks` defaults to
"jax,torch" here. The PyTorch runner is `vit_torch.benchmark.TorchRunner` (vit_jax never
imports torch, so the two meet only in this module). Run from the repository root.
"""

from __future__ import annotations

from typing import Any

from vit_core.errors import run_cli
from vit_jax import benchmark
from vit_jax.tools.benchmark_runners import RUNNERS, Options
from vit_torch.benchmark import TorchRunner


def torch_runner(opts: Options, compile_model: bool = False) -> TorchRunner:
    """The twin's runner for the benchmark's options."""
    return TorchRunner(opts.variant, opts.image_size, opts.batch_size, opts.num_classes,
                       opts.dtype, compile_model=compile_model)


FACTORIES = {**RUNNERS, "torch": torch_runner,
             "torch-compile": lambda opts: torch_runner(opts, compile_model=True)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs `vit_jax.benchmark.main` with the PyTorch runners."""
    return benchmark.main(argv, FACTORIES, prog="python -m benchmarks.speed",
                          default_frameworks="jax,torch")


if __name__ == "__main__":
    run_cli(main)
