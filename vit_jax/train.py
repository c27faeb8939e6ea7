"""Train and evaluate: `python -m vit_jax.train --config CONFIG --workdir DIR`.

The loop is `vit_jax.training.trainer.train_and_evaluate`; a run restarted with the same
command resumes from the latest checkpoint in DIR.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from vit_core.errors import SIGINT_EXIT_CODE, run_cli
from vit_jax import cli


def main(argv: list[str]) -> None:
    """The body of `python -m vit_jax.train` (flags already parsed).

    Args:
      argv: positional arguments (none are taken).
    """
    del argv
    # The library (JAX, Flax, orbax: ~2 s) loads once the flags are good: a mistyped flag
    # or --help answers at once.
    from vit_jax.training import processes, run_plan, trainer
    from vit_jax.training.host_memory import retain_freed_memory

    cli.quiet_logs()  # the progress line says enough
    retain_freed_memory()  # before JAX's CPU client exists: see training/host_memory.py
    FLAGS = flags.FLAGS
    processes.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                     FLAGS.process_id)

    def run() -> None:
        result = trainer.train_and_evaluate(
            cli.load_config_flag(), FLAGS.workdir,
            origin=run_plan.Origin.from_flag(FLAGS["config"]))
        if "interrupted_at_step" in result:
            sys.exit(SIGINT_EXIT_CODE)

    run_cli(run)


def define_flags() -> None:
    """Defines the flags of `python -m vit_jax.train`."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Checkpoints, metrics and events go here.")
    flags.DEFINE_string("coordinator_address", None, "Multi-host: 'host:port' of process 0.")
    flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
    flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
    flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
