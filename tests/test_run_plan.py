"""How long a run trains and on which splits (vit_jax/training/run_plan.py), for every config.

The configs are loaded through the real `config_flags` parser, as the CLI loads them, so
that the command-line overrides are the ones the CLI sees; the folders are real PNG
files. One tiny run goes through the CLI itself.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags
from PIL import Image

from vit_core.errors import ConfigError
from vit_jax.data import dataset_info
from vit_jax.tools import prediction
from vit_jax.training import evaluation, run_plan
from vit_jax.weights import loading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every config file, and every argument of those that take one.
CONFIGS = ["default.py", "digits.py", "b16.py", "b16_finetune.py", "s16.py", "ti16.py",
           "s16_i1k.py", "s16_i1k.py:300ep", "s16_i1k.py:runlocal", "r50_b16.py",
           "r50_b16.py:runlocal"]
PER_CLASS = 10  # training images per class; the held-out validation takes 1 of each


def test_every_config_file_is_listed():
    files = sorted(f for f in os.listdir(os.path.join(REPO, "configs"))
                   if f.endswith(".py") and f != "__init__.py")
    assert files == sorted({c.split(":")[0] for c in CONFIGS})


def load(config: str, *overrides: str):
    """(config, Origin) as `python -m vit_jax.train --config configs/CONFIG OVERRIDES` has."""
    argv = ["prog", "--config", os.path.join(REPO, "configs", config), *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=argv)  # where it reads the overrides from
    values(argv)
    return values.config, run_plan.Origin.from_flag(values["config"])


def write_folder(root, *, val: bool, test: bool) -> str:
    """PATH/train (and val/, test/) with 2 classes of 8×8 PNGs; returns "folder:PATH"."""
    splits = {"train": PER_CLASS, "val": 2 if val else 0, "test": 3 if test else 0}
    for split, count in splits.items():
        for label, colour in (("cat", 40), ("dog", 200)):
            os.makedirs(root / split / label, exist_ok=True) if count else None
            for i in range(count):
                pixels = np.full((8, 8, 3), colour + i, np.uint8)  # (8, 8, 3)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return f"folder:{root}"


# ------------------------------------------------------------------------ duration
@pytest.mark.parametrize("config", CONFIGS)
def test_steps_on_the_command_line_win(config):
    cfg, origin = load(config, "--config.num_train_steps=30")
    steps, why, from_epochs = run_plan.train_steps(cfg, 1_281_167, origin)
    assert (steps, why, from_epochs) == (30, "--config.num_train_steps", False)


@pytest.mark.parametrize("config", CONFIGS)
def test_epochs_on_the_command_line_win(config):
    cfg, origin = load(config, "--config.num_epochs=2")
    steps, why, _ = run_plan.train_steps(cfg, 1000, origin)
    assert steps == math.ceil(2 * 1000 / cfg.batch_size)
    assert why == f"--config.num_epochs: 2 × 1,000 / {cfg.batch_size:,}"


@pytest.mark.parametrize("config", CONFIGS)
def test_without_an_override_the_file_decides_and_says_so(config):
    cfg, origin = load(config)
    steps, why, from_epochs = run_plan.train_steps(cfg, 1_281_167, origin)
    if cfg.num_epochs is None:
        assert (steps, from_epochs) == (cfg.num_train_steps, False)
        assert why == f"num_train_steps={cfg.num_train_steps!r} in {REPO}/configs/{config}"
    else:
        epochs = f"{cfg.num_epochs:g}"
        assert steps == math.ceil(cfg.num_epochs * 1_281_167 / cfg.batch_size) and from_epochs
        assert why == (f"num_epochs={epochs} in {REPO}/configs/{config}: {epochs} × "
                       f"1,281,167 / {cfg.batch_size:,}")


def test_b16_says_where_its_epochs_come_from():
    cfg, origin = load("b16.py")
    assert run_plan.train_steps(cfg, 1_281_167, origin) == (
        93_836, f"num_epochs=300 in {REPO}/configs/b16.py: 300 × 1,281,167 / 4,096", True)


def test_both_on_the_command_line_is_refused():
    cfg, origin = load("ti16.py", "--config.num_train_steps=30", "--config.num_epochs=1")
    with pytest.raises(ConfigError, match="were both given; give one"):
        run_plan.train_steps(cfg, 1000, origin)


def test_resolve_records_the_winner_in_the_config():
    cfg, origin = load("ti16.py", "--config.num_train_steps=30")
    plan = run_plan.resolve(cfg, {"train", "validation"}, lambda split: 500, origin)
    assert (cfg.num_train_steps, cfg.num_epochs) == (30, None)  # what config.json records
    assert plan.describe().startswith("30 steps (--config.num_train_steps); train 'train[:99%]'")
    cfg, origin = load("ti16.py")
    plan = run_plan.resolve(cfg, {"train", "validation"}, lambda split: 8192, origin)
    assert plan.total_steps == 600 and cfg.num_epochs == 300.0  # 300 × 8192 / 4096


# -------------------------------------------------------------------------- splits
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """"folder:PATH" for each (val/, test/) combination."""
    return {(val, test): write_folder(tmp_path_factory.mktemp(f"v{val:d}t{test:d}"),
                                      val=val, test=test)
            for val in (False, True) for test in (False, True)}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("val", [False, True])
@pytest.mark.parametrize("test", [False, True])
def test_a_folder_uses_its_own_splits_with_every_config(config, val, test, folders):
    dataset = folders[val, test]
    cfg, origin = load(config, f"--config.dataset={dataset}")
    info = dataset_info.get_dataset_info(dataset, None)
    plan = run_plan.resolve(
        cfg, info.num_examples,
        lambda split: dataset_info.split_num_examples(dataset, None, split), origin)
    assert dict(plan.splits) == {"train_split": "train", "eval_split": "validation",
                                 "test_split": "test" if test else None}
    assert (cfg.train_split, cfg.eval_split, cfg.test_split) == tuple(plan.splits.values())
    # all of train/ with val/; without, all but the one image per class held out
    assert plan.num_train_examples == 2 * PER_CLASS - (0 if val else 2)
    assert dataset_info.split_num_examples(dataset, None, "validation") == (4 if val else 2)


def test_a_split_on_the_command_line_wins_on_a_folder(folders):
    dataset = folders[True, True]
    cfg, origin = load("b16.py", f"--config.dataset={dataset}", "--config.eval_split=train[:4]",
                       "--config.test_split=")
    splits, why = run_plan.resolve_splits(cfg, {"train", "validation", "test"}, origin)
    assert splits == {"train_split": "train", "eval_split": "train[:4]", "test_split": None}
    assert why == "train_split 'train[:99%]' → 'train': the folder's own splits"


def test_a_tfds_dataset_keeps_the_config_splits_it_has():
    cfg, origin = load("b16.py", "--config.dataset=cifar10")  # cifar10: train and test
    splits, why = run_plan.resolve_splits(cfg, {"train", "test"}, origin)
    assert splits == {"train_split": "train[:99%]", "eval_split": "train[99%:]",
                      "test_split": "test"}
    assert why == ("test_split 'validation' → 'test': 'cifar10' lacks a split that "
                   f"{REPO}/configs/b16.py names")
    cfg, origin = load("b16.py")  # imagenet2012 has them all: nothing changes
    assert run_plan.resolve_splits(cfg, {"train", "validation"}, origin) == (
        {"train_split": "train[:99%]", "eval_split": "train[99%:]",
         "test_split": "validation"}, "")
    cfg, origin = load("digits.py", "--config.dataset=mnist")  # no validation split
    splits, _ = run_plan.resolve_splits(cfg, {"train", "test"}, origin)
    assert splits == {"train_split": "train", "eval_split": None, "test_split": "test"}


# ------------------------------------------------------------- one run through the CLI
@pytest.mark.slow  # ~100 s here: a real 3-step run of the CLI, then predict and evaluate
def test_cli_run_of_ti16_on_a_folder_with_a_step_override(folders, tmp_path, capfd):
    dataset = folders[False, True]
    workdir = str(tmp_path / "run")
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO,
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    command = [sys.executable, "-m", "vit_jax.train", "--config", "configs/ti16.py",
               "--workdir", workdir, f"--config.dataset={dataset}",
               "--config.model.variant=testing", "--config.model.dtype=float32",
               "--config.image_size=8", "--config.batch_size=8", "--config.eval_batch_size=8",
               "--config.num_train_steps=3", "--config.warmup_steps=1"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert out.count(f"folder dataset {dataset[len('folder:'):]}: 2 classes;") == 1, out
    assert ("vit_jax.train: 3 steps (--config.num_train_steps); train 'train' (18 examples), "
            "eval 'validation', test 'test' (train_split 'train[:99%]' → 'train', eval_split "
            "'train[99%:]' → 'validation', test_split 'validation' → 'test': the folder's own "
            "splits)") in out, out
    assert "step      3/3" in out and "| test: top-1" in out and "| validation: top-1" in out
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["step"] == 3 and metrics["total_steps"] == 3
    assert (metrics["eval"]["split"], metrics["eval"]["num_examples"]) == ("validation", 2)
    assert (metrics["test"]["split"], metrics["test"]["num_examples"]) == ("test", 6)
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)
    assert (saved["train_split"], saved["eval_split"], saved["test_split"]) == (
        "train", "validation", "test")
    assert (saved["num_train_steps"], saved["num_epochs"]) == (3, None)
    # The run's tools know the folder's classes without repeating its line.
    capfd.readouterr()
    loaded = loading.load_model(workdir)
    image = os.path.join(dataset[len("folder:"):], "test", "dog", "0.png")
    prediction.predict(loaded, [image], top_k=2)
    results = evaluation.evaluate_checkpoint(workdir)
    assert sorted(results) == ["test", "validation"] and loaded.class_names == ["cat", "dog"]
    assert "folder dataset" not in "".join(capfd.readouterr())
    # evaluate --config chooses the splits as training does, and names them truly.
    done = subprocess.run(
        [sys.executable, "-m", "vit_jax.evaluate", "--checkpoint", workdir, "--config",
         "configs/b16.py", f"--config.dataset={dataset}", "--config.image_size=8",
         "--config.eval_batch_size=8"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("validation: top-1") and lines[0].endswith("(2 images)")
    assert lines[1].startswith("test: top-1") and lines[1].endswith("(6 images)")
    assert "folder dataset" not in done.stdout + done.stderr


@pytest.mark.slow  # ~20 s each here: the CLI's imports
@pytest.mark.parametrize("value", ["None", ""])
def test_clearing_num_epochs_on_the_command_line_says_it_is_not_needed(value, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "vit_jax.train", "--config", "configs/ti16.py", "--workdir",
         str(tmp_path), f"--config.num_epochs={value}"], cwd=REPO, capture_output=True,
        text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"))
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"error: flag --config.num_epochs={value}: could not convert string to float: "
        f"{value!r}; a number is needed, and one of --config.num_train_steps and "
        "--config.num_epochs alone wins over the config file's duration"], done.stderr
