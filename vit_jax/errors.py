"""The error contract of every vit-jax command: `UserError` and its kinds.

A `UserError` is a mistake the user can fix (a path, a flag, a full disk); the command
line tools (`vit_jax.cli.run_cli`) print its message as one `error:` line and exit with
code 2. Every other exception is a bug and keeps its traceback. Raise the narrowest kind;
the message says what is wrong and what to do.

Plain Python, no JAX, TensorFlow or torch: `vit_torch` raises these too.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; its message is the whole report (one line)."""


class ConfigError(UserError):
    """A config file, flag or override that cannot be used (unknown field, bad value)."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


class DatasetError(UserError):
    """A dataset that is missing, unknown or malformed (an image folder, a tfds name)."""


class WorkdirError(UserError):
    """A workdir that cannot be used: not a directory, not writable, of another config."""


class DiskFullError(UserError):
    """The disk filled up; the message names it and the last good checkpoint."""


class TrainingError(UserError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to do."""
