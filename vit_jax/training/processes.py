"""The process around a training run: multi-host start-up and stop signals.

`initialize_distributed` starts multi-host JAX (from flags, or from the cluster's
environment); `stop_signals` tells the training loop that the process was asked to stop
(SIGTERM, a preemption notice, or a first Ctrl-C), so that it saves and returns; with
several processes, all of them at the same step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator

import jax
from jax.experimental import multihost_utils


def initialize_distributed(coordinator: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
    """`jax.distributed.initialize` from flags, or from the environment (SLURM, TPU pods,
    JAX_COORDINATOR_ADDRESS...) when `VIT_JAX_DISTRIBUTED=1`; a no-op for one process.

    Args:
      coordinator: 'host:port' of process 0, or None.
      num_processes: the number of processes (with `coordinator`).
      process_id: this process's index (with `coordinator`).
    """
    if coordinator:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    elif os.environ.get("VIT_JAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()  # auto-detected cluster


@contextlib.contextmanager
def stop_signals(workdir: str) -> Iterator[Callable[[int], str | None]]:
    """Notices SIGTERM (a preemption notice) and a first Ctrl-C, so the loop can save and stop.

    The first SIGINT prints one line (a save follows; a second Ctrl-C stops at once) and
    puts SIGINT back to the system's default, so that the second one ends the process
    even while it waits in native code (a compile, a device transfer), with no traceback.
    The previous handlers are back when the block exits. A SIGINT that the process was
    started with ignored (a background job of a script) stays ignored.

    Args:
      workdir: named in the line printed on Ctrl-C.

    Yields:
      `stop_requested(step)`: None, or "SIGTERM" / "SIGINT" once one arrived. With several
      processes, all of them stop at the same step (JAX's preemption notifier, which owns
      SIGTERM there): a Ctrl-C on one host is passed on to it as this process's own
      SIGTERM, and that process reports "SIGINT", the others "SIGTERM".
    """
    received: list[str] = []
    multi = jax.process_count() > 1

    def on_sigterm(signum, frame):
        received.append("SIGTERM")

    def on_sigint(signum, frame):
        received.append("SIGINT")
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the second Ctrl-C ends the process
        # os.write: a print here could land inside the main thread's own write to stderr.
        os.write(sys.stderr.fileno(), (
            f"\nCtrl-C: saving a checkpoint in {workdir} after the current step (Ctrl-C "
            "again stops at once, without saving)\n").encode())
        if multi:  # the notifier tells every process; they agree on a step to stop at
            signal.raise_signal(signal.SIGTERM)

    def stop_requested(step: int) -> str | None:
        if multi:
            if not multihost_utils.reached_preemption_sync_point(step):
                return None
            return "SIGINT" if received else "SIGTERM"
        return received[0] if received else None

    previous = {}
    # Several processes: JAX's preemption notifier owns SIGTERM (a handler of its own).
    wanted = {signal.SIGINT: on_sigint} if multi else {signal.SIGTERM: on_sigterm,
                                                       signal.SIGINT: on_sigint}
    for signum, handler in wanted.items():
        if signum == signal.SIGINT and signal.getsignal(signum) == signal.SIG_IGN:
            continue
        # Outside the main thread (some test runners) no handler can be installed.
        with contextlib.suppress(ValueError):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield stop_requested
    finally:
        for signum, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
