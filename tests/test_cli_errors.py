"""The error contract through the real command lines: one `error:` line, exit code 2.

Each case runs `python -m vit_jax.train` (or `evaluate`) as a user would and checks the
whole of stderr: the one line, no traceback, no TensorFlow/absl/orbax chatter. The disk
cases mount a small or read-only tmpfs in a private mount namespace (`unshare -rm`), so
they need no root and leave nothing mounted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from _train_subprocess import REPO, subprocess_env, train_flags

from vit_core import errors
from vit_jax.training import trainer

TIMEOUT_S = 600  # a bound for a hung process, far above the normal few seconds


def run(args: list[str], *, timeout: float = TIMEOUT_S, jax_cache: str | None = None,
        **env: str) -> subprocess.CompletedProcess:
    """Runs `python ARGS` from the repository root with 1 CPU device; output captured."""
    return subprocess.run([sys.executable, *args], cwd=REPO,
                          env=subprocess_env(1, jax_cache, **env),
                          capture_output=True, text=True, timeout=timeout, check=False)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def assert_one_error_line(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2 and stderr is exactly one 'error:' line holding every fragment."""
    lines = stderr_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-3000:])
    assert lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_missing_config_file_is_one_line(tmp_path):
    proc = run(["-m", "vit_jax.train", "--config", "configs/no_such.py",
                "--workdir", str(tmp_path / "w")])
    assert_one_error_line(proc, "cannot load the config file configs/no_such.py",
                          "No such file or directory")
    assert not (tmp_path / "w").exists()


@pytest.mark.slow  # 2 processes of ~8 CPU-s each (imports) per case (2026-12-07)
@pytest.mark.parametrize("flag, message", [
    ("--config.bach_size=3",
     "error: --config.bach_size: the config has no field 'bach_size'; did you mean "
     "'batch_size'? (every field is listed in configs/default.py)"),
    ("--config.model.varient=B/16",
     "error: --config.model.varient: the config has no field 'varient'; did you mean "
     "'variant'? (every field is listed in configs/default.py)"),
])
def test_override_typo_names_the_field_and_the_close_match(tmp_path, flag, message):
    # Both spellings of the config flag take different paths through ml_collections.
    for config_flag in (["--config", "configs/digits.py"], ["--config=configs/digits.py"]):
        proc = run(["-m", "vit_jax.train", *config_flag, "--workdir", str(tmp_path), flag])
        assert stderr_lines(proc) == [message] and proc.returncode == 2, proc.stderr[-2000:]


def test_workdir_that_is_a_file_is_one_line(digits_dir, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    proc = run(["-m", "vit_jax.train", *train_flags(str(afile), digits_dir)])
    assert_one_error_line(proc, f"--workdir {afile} is a file, not a directory")
    # The start-up line names the model by its sizes, not just a variant name.
    assert ("vit_jax.train: ViT variant 'testing' (width 32, depth 2, 4 heads, patch 4) on "
            "dataset 'digits'") in proc.stdout
    assert afile.read_text() == "not a directory"


def unshare_available() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], check=False,
                              capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


needs_unshare = pytest.mark.skipif(not unshare_available(),
                                   reason="needs `unshare -rm` (util-linux, user namespaces)")


def in_tmpfs(script: str, size: str, tmp_path, *, timeout: float = TIMEOUT_S,
             jax_cache: str | None = None) -> subprocess.CompletedProcess:
    """Runs a bash `script` with $MNT a fresh tmpfs of `size`, in its own mount namespace."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    body = f'set -u\nMNT={mnt}\nmount -t tmpfs -o size={size} tmpfs "$MNT"\n' + script
    return subprocess.run(["unshare", "-rm", "bash", "-c", body], cwd=REPO,
                          env=subprocess_env(1, jax_cache, PY=sys.executable), capture_output=True,
                          text=True, timeout=timeout, check=False)


@needs_unshare
def test_workdir_that_is_not_writable_is_one_line(digits_dir, tmp_path):
    flags = " ".join(train_flags("$MNT/run", digits_dir))
    proc = in_tmpfs(f'mount -o remount,ro "$MNT"\n"$PY" -m vit_jax.train {flags}\n', "1m",
                    tmp_path)
    assert_one_error_line(proc, "cannot create the workdir", "/run", "Read-only file system")


@needs_unshare
@pytest.mark.slow  # two training processes
def test_full_disk_is_one_line_and_the_same_command_resumes(digits_dir, jax_cache, tmp_path):
    """The disk fills after the step-10 checkpoint: one error line naming the disk and that
    checkpoint; once space is freed the same command resumes from it and finishes."""
    flags = " ".join(train_flags("$MNT/run", digits_dir, num_train_steps=60,
                                 checkpoint_every_steps=10, log_every_steps=10,
                                 sync_every_steps=1, image_size=8, batch_size=16))
    script = f"""
# 0.2 s a step (tests/_train_subprocess.py): the disk is full well before step 20's save.
VIT_TEST_STEP_DELAY=0.2 "$PY" tests/_train_subprocess.py {flags} \
    > "$MNT/../out1" 2> "$MNT/../err1" &
pid=$!
while [ ! -d "$MNT/run/checkpoints/10" ] && kill -0 $pid 2>/dev/null; do sleep 0.02; done
dd if=/dev/zero of="$MNT/filler" bs=64k 2>/dev/null
wait $pid; echo "first exit: $?"
rm "$MNT/filler"
"$PY" -m vit_jax.train {flags} > "$MNT/../out2" 2> "$MNT/../err2"; echo "second exit: $?"
ls "$MNT/run/checkpoints"
"""
    proc = in_tmpfs(script, "6m", tmp_path, jax_cache=jax_cache)
    err1 = (tmp_path / "err1").read_text().splitlines()
    assert "first exit: 2" in proc.stdout, (proc.stdout, proc.stderr, err1[-20:])
    assert len(err1) == 1, "\n".join(err1[:40])
    assert err1[0].startswith(f"error: the disk holding {tmp_path / 'mnt' / 'run'} is full")
    assert "the last good checkpoint is step 10 in" in err1[0], err1[0]
    assert "a checkpoint needs" in err1[0]  # refused before orbax starts a save that fails
    assert "run the same command again to resume" in err1[0]
    out2 = (tmp_path / "out2").read_text()
    assert "second exit: 0" in proc.stdout, (proc.stdout, (tmp_path / "err2").read_text())
    assert "Resuming from the checkpoint at step 10" in out2, out2
    assert "step     60/60" in out2 and "60" in proc.stdout.split()


def test_evaluate_prints_its_result_and_nothing_else(tiny_workdir, jax_cache):
    _, workdir, _ = tiny_workdir  # evaluating reads the workdir, writes nothing there
    proc = run(["-m", "vit_jax.evaluate", "--checkpoint", workdir], jax_cache=jax_cache)
    assert proc.returncode == 0 and stderr_lines(proc) == [], proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["validation", "test"], lines
    assert set(json.loads(lines[2])) == {"validation", "test"} and len(lines) == 3


def test_finished_run_is_not_redone(tiny_workdir, tmp_path, capsys):
    config, finished, first = tiny_workdir  # the finished 12-step run, copied
    workdir = tmp_path / "w"
    shutil.copytree(finished, workdir)
    files = {p: (workdir / p).read_bytes() for p in ("metrics.json", "history.jsonl")}
    capsys.readouterr()
    again = trainer.train_and_evaluate(config, str(workdir))
    assert again == json.loads(json.dumps(first))  # the saved metrics, not a new run's
    assert "already finished (step 12)" in capsys.readouterr().out
    assert {p: (workdir / p).read_bytes() for p in files} == files


def test_run_cli_reports_user_errors_and_keeps_tracebacks_of_bugs(capsys):
    def user_mistake():
        raise errors.WorkdirError("the workdir is wrong")

    with pytest.raises(SystemExit) as e:
        errors.run_cli(user_mistake)
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: the workdir is wrong\n"

    def bug():
        raise ValueError("a shape bug inside the model")

    with pytest.raises(ValueError, match="a shape bug"):  # not swallowed into one line
        errors.run_cli(bug)


def test_every_user_error_kind_is_a_user_error():
    kinds = [errors.ConfigError, errors.CheckpointError, errors.DatasetError,
             errors.WorkdirError, errors.DiskFullError, errors.TrainingError,
             errors.ImageError]
    assert all(issubclass(k, errors.UserError) for k in kinds)
    assert not issubclass(errors.UserError, (ValueError, OSError))  # bugs are not caught

