"""What every vit-jax command-line tool shares: quiet logs, flags, errors, processes.

`parse_flags` is absl's parser with `--config` and `--config.<field>` mistakes reported as
`vit_core.errors.run_cli` reports every `UserError`: one `error:` line, exit code 2.
`quiet_logs` silences TensorFlow's, absl's and orbax's start-up and INFO chatter, which
would otherwise bury a tool's own output. `initialize_distributed` starts multi-host JAX;
`stop_signals` tells the training loop that the process was asked to stop (SIGTERM or
Ctrl-C).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import jax
from absl import flags
from absl import logging as absl_logging
from jax.experimental import multihost_utils

from vit_core.errors import ConfigError

# Libraries whose INFO lines (orbax's dozens per checkpoint, TensorFlow's) are noise here;
# urllib3 warns once per retried connection (tfds' downloads), before the one error line.
NOISY_LOGGERS = ("absl", "orbax", "tensorflow", "jax._src.distributed", "etils", "urllib3")


class OrbaxFailureFilter(logging.Filter):
    """Drops orbax's own logs of a failed background save (and asyncio's echo of them).

    A save that fails in orbax's threads (a full disk) logs hundreds of traceback lines
    from every thread; the same failure is raised to the training loop, which reports it
    in one line (`vit_core.errors.DiskFullError`).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if "/orbax/" in record.pathname.replace("\\", "/"):
            return record.levelno >= logging.CRITICAL
        if record.name == "asyncio":  # "Future exception was never retrieved"
            text = record.getMessage()
            if record.exc_info:
                text += "".join(traceback.format_exception(*record.exc_info))
            return "/orbax/" not in text and "tensorstore" not in text
        return True


def quiet_logs() -> None:
    """Shows only errors from absl, orbax and TensorFlow (call first in a CLI's `main`).

    Their INFO and WARNING lines (orbax's per checkpoint, tfds' about dataset folders)
    say nothing a user acts on; the tools print what matters themselves.
    """
    absl_logging.set_verbosity(absl_logging.ERROR)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, OrbaxFailureFilter) for f in logger.filters):
            logger.addFilter(OrbaxFailureFilter())


def config_error(error: BaseException, argv: list[str]) -> ConfigError:
    """A readable `ConfigError` for ml_collections' errors about config files and fields.

    Args:
      error: what ml_collections raised (a KeyError/AttributeError for an unknown field,
        an OSError for a config file that cannot be loaded).
      argv: the command line, to name the flag at fault.

    Returns:
      The error to raise.
    """
    text = error.args[0] if error.args else str(error)
    # ml_collections wraps a KeyError (whose text is the field's repr plus a hint) in an
    # AttributeError; unwrap down to the text.
    while isinstance(text, BaseException):
        text = text.args[0] if text.args else ""
    text = str(text)
    unknown = (re.search(r'Key "([^"]+)" does not exist', text)
               or re.match(r"""\s*['"]([^'"]+)['"]""", text))
    if unknown:
        close = re.search(r'Did you mean "([^"]+)"', text)
        return unknown_field_error(unknown.group(1), argv, close.group(1) if close else None)
    missing = re.search(r"Attempted \[[^]]+\]:\s*\n\s*(\S+)\s*\n\s*(.+)", text)
    if missing:
        return ConfigError(f"cannot load the config file {missing.group(1)}: "
                           f"{missing.group(2).strip()}")
    return ConfigError(text.strip().splitlines()[0] if text.strip() else repr(error))


def unknown_field_error(field: str, argv: list[str], close: str | None) -> ConfigError:
    """The error for `--config.<field>` naming a field the config does not have.

    Args:
      field: the unknown field (its last dotted part, or the whole dotted path).
      argv: the command line, to quote the flag as typed.
      close: the closest existing field, if any.

    Returns:
      The error to raise.
    """
    flag = next((a.split("=")[0] for a in argv if a.startswith("--config.")
                 and (a.split("=")[0] == f"--config.{field}"
                      or a.split("=")[0].endswith("." + field))), f"--config.{field}")
    hint = f"; did you mean {close!r}?" if close else ""
    return ConfigError(f"{flag}: the config has no field {field!r}{hint} (every field is "
                       "listed in configs/default.py)")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with mistakes as one 'error:' line and exit code 2.

    Args:
      argv: `sys.argv`.

    Returns:
      The positional arguments left after the flags.
    """
    FLAGS = flags.FLAGS
    try:
        return FLAGS(argv)
    except flags.UnrecognizedFlagError as e:
        if not e.flagname.startswith("config."):
            error: Exception = ConfigError(f"unknown flag --{e.flagname} (see --helpfull)")
        else:  # config_flags registers one flag per existing field
            field = e.flagname.removeprefix("config.")
            known = [n.removeprefix("config.") for n in FLAGS if n.startswith("config.")]
            close = difflib.get_close_matches(field, known, n=1)
            error = unknown_field_error(field, argv, close[0] if close else None)
    except (AttributeError, KeyError) as e:  # ml_collections: an unknown --config.<field>
        error = config_error(e, argv)
    except flags.Error as e:  # a missing required flag, a bad value
        if re.match(r"flag --config\.(num_epochs|num_train_steps)=", str(e)):
            # e.g. `--config.num_epochs=None` to make a steps override count: not needed.
            error = ConfigError(f"{e}; a number is needed, and one of --config.num_train_steps "
                                "and --config.num_epochs alone wins over the config file's "
                                "duration")
        else:
            error = ConfigError(f"{e} (see --helpfull)")
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(2)


def load_config_flag(name: str = "config") -> Any:
    """The ConfigDict of a `config_flags` flag, loading the file now.

    ml_collections loads a config file lazily, on first use, and reports a missing file
    as two chained tracebacks; this turns that into a `ConfigError`.

    Args:
      name: the flag's name.

    Returns:
      The ConfigDict, or None if the flag was not given.

    Raises:
      ConfigError: the file does not exist or cannot be read.
    """
    try:
        config = getattr(flags.FLAGS, name)
        if config is not None:
            config.keys()  # a config that failed to load raises on first use
        return config
    except (AttributeError, KeyError) as e:  # an unknown --config.<field>, applied lazily
        raise config_error(e, sys.argv) from None
    except OSError as e:
        while isinstance(e.__cause__, OSError):
            e = e.__cause__
        raise config_error(e, sys.argv) from None


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
      processes, SIGTERM is seen at the same step by all of them (JAX's preemption
      notifier); SIGINT is then left to Python (KeyboardInterrupt: `run_cli`'s one line).
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

    def stop_requested(step: int) -> str | None:
        if multi and multihost_utils.reached_preemption_sync_point(step):
            return "SIGTERM"
        return received[0] if received else None

    previous = {}
    # Several processes: JAX's preemption notifier owns SIGTERM, and a Ctrl-C on one host
    # cannot stop the others at the same step.
    wanted = {} if multi else {signal.SIGTERM: on_sigterm, signal.SIGINT: on_sigint}
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
