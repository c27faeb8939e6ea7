"""Process plumbing the command-line tools share (`vit_jax.train` re-exports it all).

`run_cli` turns user errors (`TrainingError` among them) into one "error:" line and exit
code 2; `parse_flags` is absl's flag parser with a clear error for an unknown
`--config.<field>`;
`initialize_distributed` starts multi-host JAX; `_install_sigterm_handler` tells the
training loop that the process was asked to stop (preemption), on a step every process
agrees on.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from typing import Any

import jax


# Defined here, not in train.py: under `python -m vit_jax.train` that file is `__main__`,
# and run_cli must catch the very class the loop raises (train.py re-exports it).
class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to do."""


def run_cli(fn: Callable[[], Any]) -> None:
    """Runs a CLI body; user errors become one 'error:' line and exit code 2, no traceback."""
    import sys

    from vit_jax.dataset_info import DatasetNotFoundError

    user_errors = (ValueError, FileNotFoundError, TrainingError, DatasetNotFoundError)
    try:
        fn()
    except user_errors as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def initialize_distributed(coordinator: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
    """`jax.distributed.initialize` from flags, or from the environment (SLURM, TPU pods,
    JAX_COORDINATOR_ADDRESS...) when `VIT_JAX_DISTRIBUTED=1`; a no-op for one process."""
    if coordinator:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    elif os.environ.get("VIT_JAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()  # auto-detected cluster


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, plus a flag error (not a traceback) for `--config.<unknown field>`."""
    import sys

    from absl import app

    try:
        return app.parse_flags_with_usage(argv)  # prints flags.Error and exits 1 itself
    except AttributeError as e:  # ml_collections: an override of a field the config lacks
        field = str(e).strip("'\"")  # ml_collections wraps the KeyError's repr
        sys.stderr.write(f"FATAL Flags parsing error: the config has no field {field!r} (from "
                         "a --config.* flag); the fields are in configs/default.py.\n")
        sys.exit(1)


def _install_sigterm_handler() -> Callable[[int], bool]:
    """Returns `preempted(step)`: True once SIGTERM arrived (all processes agree on when)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        # JAX's preemption notifier catches SIGTERM and picks a step every process reaches.
        return multihost_utils.reached_preemption_sync_point
    flag = {"set": False}

    def handler(signum, frame):
        flag["set"] = True

    # Outside the main thread (some test runners) no handler can be installed.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, handler)
    return lambda step: flag["set"]
