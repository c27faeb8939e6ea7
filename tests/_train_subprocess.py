"""The training CLI in a subprocess, for the reliability and multi-host tests.

As a script, `python tests/_train_subprocess.py FLAGS...` is `python -m vit_jax.train
FLAGS...` plus two test-only instruments, each off unless its variable is set:

  VIT_TEST_STEP_DELAY=SECONDS  sleep before each training batch, so that a test can signal
                               the run at a step of its choosing (no number changes).
  VIT_TEST_WRITE_LOG=FILE      append every path this process opens for writing through
                               Python's `open` to FILE (an audit hook), to check which
                               process of a multi-host run writes which file.

As a module, it gives the tests `Trainer` (one such subprocess, output in a log file,
bounded by a SIGKILL timeout, killed when its `with` block exits) and the helpers to build
its command line and environment.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.abspath(__file__)


# ----------------------------------------------------------------------- for tests
def free_port() -> int:
    """A TCP port that was free a moment ago (for the JAX coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_flags(workdir: str, data_dir: str, **overrides: Any) -> list[str]:
    """`--config configs/digits.py --workdir W --config.data_dir=D --config.K=V...` flags."""
    flags = ["--config", os.path.join(REPO, "configs", "digits.py"), "--workdir", workdir,
             f"--config.data_dir={data_dir}"]
    return flags + [f"--config.{k}={v}" for k, v in overrides.items()]


def subprocess_env(devices: int, jax_cache: str | None = None, **extra: str) -> dict[str, str]:
    """This environment with `devices` CPU devices, CPU JAX and an optional compile cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIT_TEST_")}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if jax_cache:  # the same programs compile once per test session, not once per process
        env.update(JAX_COMPILATION_CACHE_DIR=jax_cache,
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env.update(extra)
    return env


class Trainer:
    """One training subprocess; use as a context manager so it is always reaped.

    Args:
      flags: the CLI flags (see `train_flags`).
      log_path: stdout and stderr go here.
      env: the environment (see `subprocess_env`).
      timeout: seconds after which the process is SIGKILLed, whatever it is doing.
      module: run `python -m vit_jax.train` itself instead of this instrumented script.
    """

    def __init__(self, flags: list[str], *, log_path: str, env: dict[str, str],
                 timeout: float = 600.0, module: bool = False) -> None:
        entry = ["-m", "vit_jax.train"] if module else [SCRIPT]
        self.log_path = log_path
        self.deadline = time.monotonic() + timeout
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, *entry, *flags], cwd=REPO, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def output(self) -> str:
        """Everything the process printed so far."""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def signal(self, signum: int) -> None:
        """Sends `signum` to the process."""
        self.proc.send_signal(signum)

    def wait(self) -> int:
        """Waits for the exit (SIGKILL at the deadline: an AssertionError) and returns rc."""
        try:
            return self.proc.wait(timeout=max(self.deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"training subprocess timed out; output:\n{self.tail()}") from None

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Polls `condition` every 20 ms; fails if the process exits or times out first."""
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited ({self.proc.returncode}) before {what}; "
                                     f"output:\n{self.tail()}")
            if time.monotonic() > self.deadline:
                self.kill()
                raise AssertionError(f"timed out waiting for {what}; output:\n{self.tail()}")
            time.sleep(0.02)

    def tail(self, chars: int = 4000) -> str:
        """The end of the output, for failure messages."""
        return self.output()[-chars:]


def logged_train_steps(workdir: str) -> list[int]:
    """Steps of the train records in `workdir/history.jsonl` (a torn last line ignored)."""
    try:
        with open(os.path.join(workdir, "history.jsonl")) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return []
    steps = []
    for line in lines[:-1]:  # the last piece is "" or a line still being written
        record = json.loads(line)
        if record["split"] == "train":
            steps.append(record["step"])
    return steps


# ---------------------------------------------------------------------- the script
def _install_instruments() -> None:
    delay = float(os.environ.get("VIT_TEST_STEP_DELAY", "0"))
    if delay:
        from vit_jax.data import input_pipeline

        real = input_pipeline.create_train_iter

        def slow_iter(*args: Any, **kwargs: Any) -> Iterator[Any]:
            for batch in real(*args, **kwargs):
                time.sleep(delay)
                yield batch

        input_pipeline.create_train_iter = slow_iter  # trainer.py looks it up at call time
    log_path = os.environ.get("VIT_TEST_WRITE_LOG")
    if log_path:
        def audit(event: str, args: tuple[Any, ...]) -> None:
            if event == "open" and isinstance(args[0], str) and args[0] != log_path:
                mode, flags = args[1], args[2]
                writing = any(c in (mode or "") for c in "wax+") or (
                    mode is None and flags & (os.O_WRONLY | os.O_RDWR))
                if writing:
                    with open(log_path, "a") as f:
                        f.write(os.path.abspath(args[0]) + "\n")

        sys.addaudithook(audit)


def _main() -> None:
    sys.path.insert(0, REPO)  # as `python -m` from the repository root would
    _install_instruments()
    from absl import app

    from vit_jax import cli, train

    train.define_flags()  # what vit_jax/train.py does under __main__
    app.run(train.main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    _main()
