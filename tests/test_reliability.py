"""Reliability: kill -9 / SIGTERM and resume, damaged checkpoints, bad input, safe loading.

The kill and SIGTERM tests run the real CLI in subprocesses (1 CPU device each, through
`tests/_train_subprocess.py`, which only adds a per-step sleep so a signal lands mid-run)
and compare the final parameters bit for bit with an uninterrupted run of the same
command. Bad input is mostly checked in-process on `trainer.train_and_evaluate` (fast),
and through the CLI for one flag error and one user error.

NaN/inf losses: tests/test_train.py::test_nan_loss_stops_and_keeps_last_good_checkpoint.
"""

from __future__ import annotations

import ast
import hashlib
import os
import pathlib
import re
import shutil
import signal
import sys
import time
from typing import Any

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from _train_subprocess import REPO, Trainer, logged_train_steps, subprocess_env, train_flags

from conftest import apply_overrides, assert_bit_identical
from vit_core import errors
from vit_jax.data import dataset_info, input_pipeline
from vit_jax.model import vit as models
from vit_jax.training import optim, parallel, trainer
from vit_jax.training.state import CheckpointStore, CheckpointUnreadableError, TrainState
from vit_jax.weights import checkpoint, loading

# 40 steps of the digits config at 8x8; a checkpoint every 5 steps; no evaluation.
RUN: dict[str, Any] = dict(
    image_size=8, batch_size=16, num_train_steps=40, warmup_steps=2,
    checkpoint_every_steps=5, log_every_steps=1, sync_every_steps=1, eval_every_steps=0,
    eval_split="", test_split="",
)
# The kill/resume test again with RandAugment, Mixup and CutMix on: their draws must resume
# exactly too (one run for the three: each interrupted run costs 3 processes).
AUGMENTED: dict[str, Any] = dict(randaugment="(2, 10)", mixup_alpha=0.2, cutmix_alpha=1.0)
STEP_DELAY = "0.2"  # seconds slept per step by the runs a test signals (changes no number)
SIGNAL_AFTER_STEP = 13  # not a checkpoint step: the runs are stopped between checkpoints
USER_ERRORS = errors.UserError  # what `run_cli` turns into one "error:" line


# ------------------------------------------------------------------------------ helpers
def make_config(data_dir: str, **overrides: Any):
    """The config the CLI builds from `train_flags(..., **overrides)` (dotted keys allowed)."""
    from configs import digits

    config = digits.get_config()
    config.data_dir = data_dir
    return apply_overrides(config, **overrides)




def file_digests(root: str | os.PathLike) -> dict[str, str]:
    """{relative path: sha256} of every file under `root`."""
    out = {}
    for path in sorted(pathlib.Path(root).rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def resumed_step(output: str) -> int:
    """The step in the 'Resuming from the checkpoint at step N' line (exactly one)."""
    found = re.findall(r"Resuming from the checkpoint at step (\d+)", output)
    assert len(found) == 1, output[-3000:]
    return int(found[0])


def state_shapes(config) -> TrainState:
    """The shapes of a fresh TrainState of `config` (digits: 10 classes)."""
    model = models.model_from_config(config.model, 10)
    tx, _ = optim.create_optimizer(config, config.num_train_steps)
    return jax.eval_shape(lambda: TrainState.create(model, tx, config))


# ----------------------------------------------------------------------------- fixtures
# The uninterrupted runs the interrupted ones are compared with, by name: the config
# overrides on top of RUN.
REFERENCE_RUNS: dict[str, dict[str, Any]] = {"plain": {}, "augmented": AUGMENTED}


class Reference:
    """The uninterrupted 40-step run, started in the background, awaited when needed."""

    def __init__(self, root: pathlib.Path, data_dir: str, jax_cache: str,
                 **overrides: Any) -> None:
        self.workdir = str(root / "wd")
        self.flags = train_flags(self.workdir, data_dir, **RUN, **overrides)
        self.trainer = Trainer(self.flags, log_path=str(root / "reference.log"),
                               env=subprocess_env(1, jax_cache))
        self._params = None

    def params(self) -> Any:
        """Final parameters (waits for the run)."""
        if self._params is None:
            assert self.trainer.wait() == 0, self.trainer.tail()
            self._params = loading.load_model(self.workdir).params
        return self._params


@pytest.fixture(scope="module")
def references(tmp_path_factory, digits_dir, jax_cache):
    """`references(name)`: the REFERENCE_RUNS run of that name, started on first request."""
    started: dict[str, Reference] = {}

    def get(name: str) -> Reference:
        if name not in started:
            root = tmp_path_factory.mktemp(f"reference_{name.replace('+', '_')}")
            started[name] = Reference(root, digits_dir, jax_cache, **REFERENCE_RUNS[name])
        return started[name]

    try:
        yield get
    finally:
        for ref in started.values():
            ref.trainer.kill()


@pytest.fixture
def reference(references) -> Reference:
    """The plain uninterrupted run (RUN, no overrides)."""
    return references("plain")


# ------------------------------------------------------------ 2) SIGKILL, then resume
@pytest.mark.slow  # 3 training processes each (the reference, killed, resumed)
@pytest.mark.parametrize("name", ["plain", "augmented"])
def test_sigkill_mid_run_then_same_command_resumes_bit_identical(
        references, digits_dir, jax_cache, tmp_path, name):
    plain = references("plain")  # started now if not yet: it runs meanwhile
    reference, overrides = references(name), REFERENCE_RUNS[name]
    workdir = str(tmp_path / "wd")
    flags = train_flags(workdir, digits_dir, **RUN, **overrides)
    slow = subprocess_env(1, jax_cache, VIT_TEST_STEP_DELAY=STEP_DELAY)
    with Trainer(flags, log_path=str(tmp_path / "killed.log"), env=slow) as run:
        run.wait_until(lambda: max(logged_train_steps(workdir), default=0) >= SIGNAL_AFTER_STEP,
                       f"step {SIGNAL_AFTER_STEP}")
        run.signal(signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL
    killed_at = max(logged_train_steps(workdir))
    assert SIGNAL_AFTER_STEP <= killed_at < RUN["num_train_steps"]

    with Trainer(flags, log_path=str(tmp_path / "again.log"),
                 env=subprocess_env(1, jax_cache)) as again:
        assert again.wait() == 0, again.tail()
    resumed = resumed_step(again.output())
    assert resumed % RUN["checkpoint_every_steps"] == 0 and 5 <= resumed <= killed_at
    # Steps resumed+1..killed_at ran twice; their rows are kept once (history dedup).
    assert logged_train_steps(workdir) == list(range(1, 41))
    assert_bit_identical(loading.load_model(workdir).params, reference.params())
    if overrides:  # the augmentations did change the training (not silently ignored)
        with pytest.raises(AssertionError, match="differs"):
            assert_bit_identical(reference.params(), plain.params())


# ---------------------------------------------------------- 3) SIGTERM, then resume
@pytest.mark.slow  # 2 training processes (+ the reference)
def test_sigterm_saves_the_current_step_exits_0_and_resumes_bit_identical(
        reference, digits_dir, jax_cache, tmp_path):
    workdir = str(tmp_path / "wd")
    flags = train_flags(workdir, digits_dir, **RUN)
    slow = subprocess_env(1, jax_cache, VIT_TEST_STEP_DELAY=STEP_DELAY)
    with Trainer(flags, log_path=str(tmp_path / "term.log"), env=slow) as run:
        run.wait_until(lambda: max(logged_train_steps(workdir), default=0) >= SIGNAL_AFTER_STEP,
                       f"step {SIGNAL_AFTER_STEP}")
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.tail()
    found = re.findall(r"Preempted \(SIGTERM\): checkpoint saved at step (\d+)\. Run the same "
                       r"command to resume\.", run.output())
    assert len(found) == 1, run.tail()
    stopped = int(found[0])
    assert SIGNAL_AFTER_STEP <= stopped < RUN["num_train_steps"]
    assert str(stopped) in os.listdir(os.path.join(workdir, "checkpoints"))
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))  # not finished

    with Trainer(flags, log_path=str(tmp_path / "again.log"),
                 env=subprocess_env(1, jax_cache)) as again:
        assert again.wait() == 0, again.tail()
    assert resumed_step(again.output()) == stopped
    assert logged_train_steps(workdir) == list(range(1, 41))  # no step lost or repeated
    assert_bit_identical(loading.load_model(workdir).params, reference.params())


# ---------------------------------------------------------- 4) damaged checkpoints
# A failed orbax restore leaves tensorstore callbacks aimed at a closed asyncio loop;
# Python reports them as "unraisable" (harmless: the restore already failed and was handled).
orbax_restore_failure_noise = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")


def _truncate_largest_array_file(step_dir: pathlib.Path) -> None:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    largest = max(files, key=lambda p: p.stat().st_size)
    with open(largest, "r+b") as f:
        f.truncate(largest.stat().st_size // 3)


def _delete_manifest(step_dir: pathlib.Path) -> None:
    (step_dir / "state" / "manifest.ocdbt").unlink()


@orbax_restore_failure_noise
@pytest.mark.parametrize("damage", [_truncate_largest_array_file, _delete_manifest],
                         ids=["truncated_array_file", "deleted_manifest"])
def test_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(
        reference, digits_dir, tmp_path, capsys, damage):
    reference.params()  # the finished run: checkpoints 35 and 40
    good, bad = tmp_path / "good", tmp_path / "bad"
    shutil.copytree(reference.workdir, good)
    shutil.rmtree(good / "checkpoints" / "40")
    shutil.copytree(reference.workdir, bad)
    damage(bad / "checkpoints" / "40")
    config = make_config(digits_dir, **RUN)
    shapes, layout = state_shapes(config), parallel.create_layout(config)

    pristine = CheckpointStore(str(good), config)
    expected = pristine.restore_latest(shapes, layout)
    pristine.close()
    capsys.readouterr()
    store = CheckpointStore(str(bad), config)
    restored = store.restore_latest(shapes, layout)
    out = capsys.readouterr().out
    assert int(restored.step) == 35
    assert_bit_identical(jax.device_get(restored.params), jax.device_get(expected.params))
    # One clear line: which step, where, why; then where it went and what is used instead.
    assert re.search(r"WARNING: the checkpoint at step 40 in \S+ cannot be restored "
                     r"\(\w+: .+\); trying the previous one\.", out), out
    assert "Resuming from the checkpoint at step 35" in out
    aside = os.listdir(bad / "unreadable_checkpoints")
    assert len(aside) == 1 and aside[0].startswith("40.")
    assert store.manager.all_steps() == [35]
    store.save(40, restored)  # the step can be written again
    store.wait()
    store.close()
    assert sorted(os.listdir(bad / "checkpoints")) == ["35", "40"]


@orbax_restore_failure_noise
def test_no_readable_checkpoint_is_an_error_and_nothing_is_moved(reference, digits_dir, tmp_path):
    reference.params()
    workdir = tmp_path / "wd"
    shutil.copytree(reference.workdir, workdir)
    for step in ("35", "40"):
        _delete_manifest(workdir / "checkpoints" / step)
    # As if stopped before the end: a finished run (metrics.json) is not restored at all.
    (workdir / "metrics.json").unlink()
    before = file_digests(workdir)
    config = make_config(digits_dir, **RUN)
    with pytest.raises(CheckpointUnreadableError, match=r"(?s)None of the checkpoints .*"
                       r"step 40: .*step 35: .*Move them away"):
        trainer.train_and_evaluate(config, str(workdir))
    assert file_digests(workdir) == before


@orbax_restore_failure_noise
def test_leftover_orbax_tmp_dir_is_ignored_and_removed(reference, digits_dir, tmp_path):
    reference.params()
    workdir = tmp_path / "wd"
    shutil.copytree(reference.workdir, workdir)
    # A save of step 45 killed midway: orbax writes into a temporary name, renamed at the end.
    tmp = workdir / "checkpoints" / "45.orbax-checkpoint-tmp-1795000000000000"
    shutil.copytree(workdir / "checkpoints" / "40", tmp)
    _truncate_largest_array_file(tmp)
    config = make_config(digits_dir, **RUN)
    store = CheckpointStore(str(workdir), config)
    assert store.latest_step() == 40
    restored = store.restore_latest(state_shapes(config), parallel.create_layout(config))
    assert int(restored.step) == 40
    store.close()
    deadline = time.monotonic() + 30  # process 0 removes it in the background
    while tmp.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["35", "40"]


# ------------------------------------------------------------------------ 5) bad input
class TwoChannelImages(tfds.core.GeneratorBasedBuilder):
    """A tiny dataset of 8x8 images with 2 channels (no such thing as RGB)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 2)),
                "label": tfds.features.ClassLabel(num_classes=10)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {s: self._generate_examples() for s in ("train", "validation", "test")}

    def _generate_examples(self):
        for i in range(20):
            yield i, {"image": np.full((8, 8, 2), i, np.uint8), "label": i % 10}


def _npz_of(path: pathlib.Path, **model_overrides: Any) -> str:
    """Saves a testing-variant model's params (patch 4, 8x8) with some sizes changed.

    The values are zeros: only the keys and shapes matter to these tests.
    """
    kw = dict(num_classes=10, patch_size=4) | model_overrides
    shapes = models.param_shapes(models.create_model("testing", **kw), 8)
    checkpoint.save_npz(path, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes))
    return str(path)


class _Evil:
    """Unpickling this would run a shell command: loaders must refuse it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, str]:
    """Checkpoints and data that must be refused, built once."""
    root = tmp_path_factory.mktemp("bad")
    files = {
        "wide": _npz_of(root / "wide.npz", hidden_size=48),
        "seven_classes": _npz_of(root / "seven.npz", num_classes=7),
        "marker": str(root / "pwned"),
    }
    data = (pathlib.Path(_npz_of(root / "ok.npz"))).read_bytes()
    (root / "truncated.npz").write_bytes(data[: len(data) // 2])
    files["truncated"] = str(root / "truncated.npz")
    np.savez(root / "evil.npz", evil=np.array([_Evil(files["marker"])], dtype=object))
    files["evil"] = str(root / "evil.npz")
    files["two_channel_dir"] = str(root / "tfds")
    TwoChannelImages(data_dir=files["two_channel_dir"]).download_and_prepare()
    return files


# (id, config overrides (values "{name}" come from bad_files), exception, message regex)
BAD_INPUTS = [
    ("image_size_not_divisible_by_patch", {"image_size": 10}, errors.ConfigError,
     r"Image size 10x10 is not divisible by the patch size 4 \(config\.image_size; "
     r"config\.model\.patch_size or that of the variant\); e\.g\. use image size 8x8\."),
    ("unknown_variant", {"model.variant": "X/99"}, errors.ConfigError,
     r"Unknown ViT variant 'X/99'\. Known variants: .*'B/16'"),
    ("init_checkpoint_of_another_width", {"init_checkpoint": "{wide}"}, errors.CheckpointError,
     r"The checkpoint's sizes \(width, depth, heads, MLP\) = \(48, 2, 4, 64\) match no "
     r"variant in vit_core/variants\.py"),
    ("num_classes_mismatch_without_reinit_head",
     {"init_checkpoint": "{seven_classes}", "reinit_head": False}, errors.CheckpointError,
     r"shape mismatch at head/kernel: checkpoint \(32, 7\), model \(32, 10\)"),
    ("truncated_npz", {"init_checkpoint": "{truncated}"}, errors.CheckpointError,
     r"Not a valid \.npz \(zip\) file: .*truncated\.npz \(\d+ bytes, .*\(truncated\)"),
    ("npz_with_pickled_objects", {"init_checkpoint": "{evil}"}, errors.CheckpointError,
     r"evil\.npz contains pickled Python objects; refusing to load it"),
    ("missing_init_checkpoint", {"init_checkpoint": "/nonexistent/ViT-B_16.npz"},
     errors.CheckpointError, r"Checkpoint file not found: /nonexistent/ViT-B_16\.npz"),
    ("unknown_dataset", {"dataset": "no_such_dataset"}, dataset_info.DatasetNotFoundError,
     r"^Unknown tfds dataset 'no_such_dataset'"),
    ("dataset_not_in_data_dir", {"dataset": "mnist", "data_dir": "{marker}_data"},
     dataset_info.DatasetNotFoundError,
     r"Dataset 'mnist' is not prepared in data_dir .*never downloads.*`python -m vit_jax\.prepare "
     r"mnist --data_dir "),
    ("images_with_two_channels", {"dataset": "two_channel_images", "data_dir": "{two_channel_dir}"},
     errors.ConfigError, r"'two_channel_images' has 2-channel images; the input pipeline takes 1 "),
    ("batch_size_not_divisible_by_devices", {"batch_size": 12}, errors.ConfigError,
     r"batch_size=12 must be divisible by the number of devices \(8\); e\.g\. use batch_size=8"),
]


@pytest.mark.parametrize("overrides, error, message", [c[1:] for c in BAD_INPUTS],
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_clear_error_and_leaves_workdirs_untouched(
        reference, digits_dir, bad_files, tmp_path, overrides, error, message):
    overrides = {k: v.format(**bad_files) if isinstance(v, str) else v
                 for k, v in overrides.items()}
    bad = make_config(overrides.pop("data_dir", digits_dir), **(RUN | overrides))
    # A fresh workdir: the specific error, and nothing left that would refuse the fixed run.
    fresh = tmp_path / "fresh"
    with pytest.raises(error, match=message) as e:
        trainer.train_and_evaluate(bad, str(fresh))
    assert isinstance(e.value, USER_ERRORS)  # the CLI prints it as one "error:" line
    assert not (fresh / "config.json").exists()
    assert not (fresh / "checkpoints").exists() or not os.listdir(fresh / "checkpoints")
    CheckpointStore(str(fresh), make_config(digits_dir, **RUN)).close()  # would not refuse
    assert not os.path.exists(bad_files["marker"])  # the pickle was never executed
    # A workdir with checkpoints: an error too, and not one byte of it changes.
    reference.params()
    existing = tmp_path / "existing"
    shutil.copytree(reference.workdir, existing)
    before = file_digests(existing)
    with pytest.raises(USER_ERRORS):
        trainer.train_and_evaluate(bad, str(existing))
    assert file_digests(existing) == before


def test_workdir_of_another_config_is_refused_untouched(reference, digits_dir, tmp_path):
    reference.params()
    workdir = tmp_path / "wd"
    shutil.copytree(reference.workdir, workdir)
    before = file_digests(workdir)
    other = make_config(digits_dir, **(RUN | {"learning_rate": 0.01, "seed": 3}))
    with pytest.raises(errors.WorkdirError,
                       match=r"(?s)belongs to a run with a different config.*"
                       r"learning_rate: workdir has 0\.003, this run has 0\.01\n"
                       r"  seed: workdir has 0, this run has 3"):
        trainer.train_and_evaluate(other, str(workdir))
    assert file_digests(workdir) == before


def test_model_refuses_images_with_the_wrong_channel_count():
    model = models.create_model("testing", num_classes=10, patch_size=4)
    with pytest.raises(ValueError, match=r"Expected 3 colour channels .* got 1"):
        model.init(jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match=r"Images need 1, 3 or 4 channels"):
        input_pipeline.preprocess_for_eval(np.zeros((8, 8, 2), np.uint8), 8)


@pytest.mark.slow  # 2 CLI processes (+ the reference)
def test_cli_flag_error_and_user_error(reference, digits_dir, jax_cache, tmp_path):
    """Through `python -m vit_jax.train`: no traceback, non-zero exit, workdir untouched."""
    reference.params()
    existing = tmp_path / "existing"
    shutil.copytree(reference.workdir, existing)
    before = file_digests(existing)
    env = subprocess_env(1, jax_cache)
    typo = train_flags(str(existing), digits_dir, **(RUN | {"nonexistent": 1}))
    user = train_flags(str(tmp_path / "fresh"), digits_dir, **(RUN | {"image_size": 10}))
    with Trainer(typo, log_path=str(tmp_path / "typo.log"), env=env, module=True) as a, \
            Trainer(user, log_path=str(tmp_path / "user.log"), env=env, module=True) as b:
        rc_typo, rc_user = a.wait(), b.wait()
    assert rc_typo == 2 and "Traceback" not in a.output()
    assert "error: --config.nonexistent: the config has no field 'nonexistent'" in a.output()
    assert rc_user == 2 and "Traceback" not in b.output()
    errors = [line for line in b.output().splitlines() if line.startswith("error:")]
    assert errors == ["error: Image size 10x10 is not divisible by the patch size 4 "
                      "(config.image_size; config.model.patch_size or that of the variant); "
                      "e.g. use image size 8x8."], b.tail()
    assert file_digests(existing) == before
    assert not (tmp_path / "fresh" / "config.json").exists()


def test_converter_refuses_a_pickled_npz(bad_files, tmp_path, capsys):
    """`python -m vit_torch.convert` on an npz holding a pickle (in-process: same code path).

    The `.pt` case is tests/test_vit_torch.py::test_cli_refuses_pickled_objects.
    """
    from vit_torch.__main__ import main

    assert main([bad_files["evil"], str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "pickled" in err[0]
    assert not os.path.exists(bad_files["marker"]) and not (tmp_path / "out.pt").exists()


# ------------------------------------------------------------------------ 6) safe loading
def _python_files() -> list[pathlib.Path]:
    skip = {"tests", ".git", ".venv", "venv", "build", "dist"}
    return [p for p in pathlib.Path(REPO).rglob("*.py")
            if not skip & set(p.relative_to(REPO).parts)]


def _keyword(call: ast.Call, name: str) -> Any:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_every_loader_in_the_code_refuses_pickles():
    """np.load(allow_pickle=False), torch.load(weights_only=True); no pickle/joblib loads."""
    problems, seen = [], {"np.load": 0, "torch.load": 0}
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            call = f"{owner}.{node.func.attr}"
            if call in ("np.load", "numpy.load"):
                seen["np.load"] += 1
                if _keyword(node, "allow_pickle") is not False:
                    problems.append(f"{where}: {call} without allow_pickle=False")
            elif call == "torch.load":
                seen["torch.load"] += 1
                if _keyword(node, "weights_only") is not True:
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif owner in ("pickle", "cPickle", "dill", "joblib", "cloudpickle") and \
                    node.func.attr in ("load", "loads", "Unpickler"):
                problems.append(f"{where}: {call} can execute code")
    assert not problems, "\n".join(problems)
    assert seen["np.load"] >= 1 and seen["torch.load"] >= 1  # the scan sees the loaders


def test_safetensors_input_is_read_without_pickle(tmp_path):
    """A .safetensors file is parsed, never unpickled: a pickle renamed to it is refused."""
    import torch

    from vit_torch.__main__ import main

    marker = tmp_path / "pwned"
    torch.save({"x": _Evil(str(marker))}, tmp_path / "fake.safetensors")
    assert main([str(tmp_path / "fake.safetensors"), str(tmp_path / "o.npz"),
                 "--variant", "testing"]) == 2
    assert not marker.exists() and not (tmp_path / "o.npz").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
