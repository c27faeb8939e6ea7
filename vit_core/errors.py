"""The error contract of every vit-jax command: `UserError` and its kinds.

A `UserError` is a mistake the user can fix (a path, a flag, a full disk); the command
line tools (`vit_jax.cli.run_cli`) print its message as one `error:` line and exit with
code 2. Every other exception is a bug and keeps its traceback. Raise the narrowest kind;
the message says what is wrong and what to do. `run_cli` is the one place that turns
them into that line.

`ConfigError` and `CheckpointError` are also `ValueError`s (a bad value), so library
callers that catch `ValueError` keep working.

Plain Python, no JAX, TensorFlow or torch: `vit_torch` raises these too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """Something the user can fix; its message is the whole report (one line)."""


class ConfigError(UserError, ValueError):
    """A config file, flag or override that cannot be used (unknown field, bad value)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


class DownloadError(CheckpointError):
    """Released weights that cannot be fetched (no network, HTTP error, a bad file)."""


class DatasetError(UserError):
    """A dataset that is missing, unknown or malformed (an image folder, a tfds name)."""


class ImageError(UserError, ValueError):
    """An image file (for predict or visualize) that is missing or cannot be decoded."""


class WorkdirError(UserError):
    """A workdir that cannot be used: not a directory, not writable, of another config."""


class DiskFullError(UserError):
    """The disk filled up; the message names it and the last good checkpoint."""


class TrainingError(UserError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to do."""


SIGINT_EXIT_CODE = 130  # 128 + SIGINT: what a shell reports for a command Ctrl-C stopped


def run_cli(fn: Callable[[], Any]) -> Any:
    """Runs a CLI body: a `UserError` is one 'error:' line and exit code 2; Ctrl-C
    (KeyboardInterrupt) is one 'interrupted' line and exit code 130.

    Args:
      fn: the body, called with no arguments.

    Returns:
      What `fn` returns.
    """
    try:
        return fn()
    except UserError as e:
        # One line: a multi-line message (e.g. a list of differing config fields) is
        # indented under it, never a traceback.
        print(f"error: {e}", file=sys.stderr, flush=True)
        if isinstance(e, DiskFullError):
            # orbax's writes still in flight fail again while the process shuts down and
            # tensorstore prints their tracebacks from C threads; the line above said it all.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stderr.fileno())
        sys.exit(2)
    except KeyboardInterrupt:  # the user stopped it: nothing to debug, no traceback
        print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        sys.exit(SIGINT_EXIT_CODE)
