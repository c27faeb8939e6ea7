"""Ctrl-C (a real SIGINT to a subprocess): training saves and resumes bit for bit; the
other tools end in one line. Exit code 130 (128 + SIGINT), as a shell reports it.

Training runs `tests/_train_subprocess.py` (the CLI plus a per-step sleep, so the signal
lands mid-run). predict, evaluate and prepare are made to wait on a named pipe (a
workdir's config.json, an image of a folder) that nobody writes, so that the signal
surely lands inside the tool's work and not before or after it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from _train_subprocess import REPO, Trainer, logged_train_steps, subprocess_env, train_flags

from conftest import assert_bit_identical
from vit_jax.weights import loading

RUN = dict(image_size=8, batch_size=16, num_train_steps=20, warmup_steps=2,
           checkpoint_every_steps=5, log_every_steps=1, sync_every_steps=1, eval_every_steps=0,
           eval_split="", test_split="")
SIGNAL_AFTER_STEP = 7  # not a checkpoint step: without the Ctrl-C save, steps 6-7 are lost
TIMEOUT = 300  # seconds; every subprocess is SIGKILLed after it
pytestmark = pytest.mark.usefixtures("sigint_reaches_children")


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("jax_cache"))


def _stopped_line(output: str) -> int:
    found = re.findall(r"Interrupted \(Ctrl-C\) at step (\d+): checkpoint saved in (\S+); "
                       r"rerun the same command to resume\.", output)
    assert len(found) == 1, output[-3000:]
    return int(found[0][0])


@pytest.mark.slow  # ~160 s here: two short runs at once, then the resumed one
def test_ctrl_c_saves_the_step_exits_130_and_resumes_bit_identical(
        digits_dir, jax_cache, tmp_path):
    reference_dir, workdir = str(tmp_path / "reference"), str(tmp_path / "wd")
    flags = train_flags(workdir, digits_dir, **RUN)
    slow = subprocess_env(1, jax_cache, VIT_TEST_STEP_DELAY="0.3")
    with Trainer(train_flags(reference_dir, digits_dir, **RUN), timeout=TIMEOUT,
                 log_path=str(tmp_path / "reference.log"), env=subprocess_env(1, jax_cache)
                 ) as reference, Trainer(flags, log_path=str(tmp_path / "int.log"), env=slow,
                                         timeout=TIMEOUT) as run:
        run.wait_until(lambda: max(logged_train_steps(workdir), default=0) >= SIGNAL_AFTER_STEP,
                       f"step {SIGNAL_AFTER_STEP}")
        run.signal(signal.SIGINT)
        assert run.wait() == 130, run.tail()
        assert reference.wait() == 0, reference.tail()
    output = run.output()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    assert f"Ctrl-C: saving a checkpoint in {workdir} after the current step" in output
    stopped = _stopped_line(output)
    assert SIGNAL_AFTER_STEP <= stopped < RUN["num_train_steps"]
    assert str(stopped) in os.listdir(os.path.join(workdir, "checkpoints"))

    with Trainer(flags, log_path=str(tmp_path / "again.log"), env=subprocess_env(1, jax_cache),
                 timeout=TIMEOUT) as again:
        assert again.wait() == 0, again.tail()
    assert f"Resuming from the checkpoint at step {stopped} " in again.output()
    assert logged_train_steps(workdir) == list(range(1, RUN["num_train_steps"] + 1))
    assert_bit_identical(loading.load_model(workdir).params,
                         loading.load_model(reference_dir).params)


@pytest.mark.slow  # 20-40 s here
def test_second_ctrl_c_stops_at_once_without_a_traceback(digits_dir, jax_cache, tmp_path):
    workdir = str(tmp_path / "wd")
    # 5 s per step: the first Ctrl-C's save could come only after the sleep.
    slow = subprocess_env(1, jax_cache, VIT_TEST_STEP_DELAY="5")
    with Trainer(train_flags(workdir, digits_dir, **RUN), log_path=str(tmp_path / "log"),
                 env=slow, timeout=TIMEOUT) as run:
        run.wait_until(lambda: logged_train_steps(workdir), "step 1")
        run.signal(signal.SIGINT)
        run.wait_until(lambda: "Ctrl-C: saving" in run.output(), "the first Ctrl-C's line")
        start = time.monotonic()
        run.signal(signal.SIGINT)
        code = run.wait()
        elapsed = time.monotonic() - start
    assert code == -signal.SIGINT, run.tail()  # the shell's 130
    assert elapsed < 3, elapsed
    assert "Traceback" not in run.output() and "Interrupted (Ctrl-C) at" not in run.output()


# --------------------------------------------------------------- the other tools
def _interrupt(args: list[str], pipe: str, tmp_path) -> tuple[int, str]:
    """Runs `python -m vit_jax.<tool> args` until it opens `pipe`, then sends Ctrl-C."""
    os.mkfifo(pipe)
    log_path = tmp_path / "tool.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT,
                                env=subprocess_env(1, None, PYTHONPATH=REPO))
    try:
        deadline = time.monotonic() + TIMEOUT
        writer = None
        while writer is None:  # opening the writing end succeeds once the tool reads it
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            try:
                writer = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                time.sleep(0.05)
        time.sleep(0.2)  # the tool now waits in read()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        os.close(writer)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, log_path.read_text()


def _assert_one_line(code: int, output: str) -> None:
    assert code == 130, output
    assert output.strip().splitlines()[-1] == "interrupted (Ctrl-C)", output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output


@pytest.mark.slow  # 6-12 s here: the tool's imports
def test_ctrl_c_in_predict_is_one_line(tmp_path):
    from PIL import Image

    image, workdir = str(tmp_path / "image.png"), tmp_path / "run"
    Image.new("RGB", (8, 8)).save(image)
    os.makedirs(workdir)
    _assert_one_line(*_interrupt(["vit_jax.predict", "--checkpoint", str(workdir), image],
                                 str(workdir / "config.json"), tmp_path))


@pytest.mark.slow  # 6-10 s here: the tool's imports
def test_ctrl_c_in_evaluate_is_one_line(tmp_path):
    workdir = tmp_path / "run"
    os.makedirs(workdir)
    _assert_one_line(*_interrupt(["vit_jax.evaluate", "--checkpoint", str(workdir)],
                                 str(workdir / "config.json"), tmp_path))


@pytest.mark.slow  # 20-30 s here: the tool's imports (TensorFlow)
def test_ctrl_c_in_prepare_is_one_line(tmp_path):
    from PIL import Image

    for name in ("cat", "dog"):
        os.makedirs(tmp_path / "data" / "train" / name)
        Image.new("RGB", (8, 8)).save(tmp_path / "data" / "train" / name / "a.png")
    pipe = str(tmp_path / "data" / "train" / "dog" / "b.png")  # an "image" being checked
    code, output = _interrupt(["vit_jax.prepare", f"folder:{tmp_path / 'data'}"], pipe,
                              tmp_path)
    _assert_one_line(code, output)
    assert output.startswith(f"checking the image folder {tmp_path / 'data'}"), output
