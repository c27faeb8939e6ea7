"""The real train_and_evaluate on a tiny model: loss falls, files appear, resume, layouts agree."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import tiny_digits_config
from vit_core import errors
from vit_jax.training import trainer
from vit_jax.weights import checkpoint, loading


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _params(workdir):
    return loading.load_model(workdir).params


@pytest.fixture
def trained(tiny_workdir):
    """12 steps of the digits config (lr 3e-3), checkpoints every 4 steps (conftest)."""
    config, _, _ = tiny_workdir
    assert config.learning_rate == 3e-3  # what test_workdir_of_another_config_is_refused reads
    return tiny_workdir


def test_train_and_evaluate_writes_everything_and_learns(trained):
    _, workdir, result = trained
    history = _read_jsonl(os.path.join(workdir, "history.jsonl"))
    losses = [h["loss"] for h in history if h["split"] == "train"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "8"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
    with open(os.path.join(workdir, "metrics.json")) as f:
        saved = json.load(f)
    assert saved["step"] == 12 and saved["test"]["num_examples"] == 360
    assert saved["eval"]["num_examples"] == 144 and 0.0 <= saved["test"]["top1"] <= 1.0
    assert result["compiles"] == 1  # the train step never recompiled


def test_resume_continues_exactly(trained, tmp_path):
    config, workdir, _ = trained
    final = _params(workdir)
    shutil.copytree(workdir, tmp_path / "wd")
    shutil.rmtree(tmp_path / "wd" / "checkpoints" / "12")  # as if killed after step 8's save
    trainer.train_and_evaluate(config, str(tmp_path / "wd"))
    history = _read_jsonl(tmp_path / "wd" / "history.jsonl")
    # Step 12 was logged before the "kill" and again after the resume: one row remains.
    assert [h["step"] for h in history if h["split"] == "train"] == [4, 8, 12]
    jax.tree.map(np.testing.assert_array_equal, _params(str(tmp_path / "wd")), final)


def test_workdir_written_before_a_field_existed_resumes(trained, tmp_path):
    """A config.json without today's newest fields: they count as their defaults."""
    config, workdir, _ = trained
    shutil.copytree(workdir, tmp_path / "wd")
    shutil.rmtree(tmp_path / "wd" / "checkpoints" / "12")
    path = tmp_path / "wd" / "config.json"
    saved = json.loads(path.read_text())
    del saved["model"]["num_registers"], saved["model"]["layer_norm_eps"]
    path.write_text(json.dumps(saved))
    trainer.train_and_evaluate(config, str(tmp_path / "wd"))
    jax.tree.map(np.testing.assert_array_equal, _params(str(tmp_path / "wd")), _params(workdir))
    # A field it has with another value is still a different config.
    saved["model"]["num_registers"] = 2
    path.write_text(json.dumps(saved))
    with pytest.raises(errors.WorkdirError, match=r"model: workdir has"):
        trainer.train_and_evaluate(config, str(tmp_path / "wd"))


def test_workdir_of_another_config_is_refused(trained):
    config, workdir, _ = trained
    other = tiny_digits_config(config.data_dir, learning_rate=1e-2)
    with pytest.raises(errors.WorkdirError, match=r"learning_rate: workdir has 0\.003"):
        trainer.train_and_evaluate(other, workdir)


@pytest.mark.slow  # 4 runs, 4 layouts compiled: 225 s at load 12 on 2 cores (2026-12-07)
@pytest.mark.parametrize("accum", [2])
def test_jit_and_pmap_and_accumulation_agree(digits_dir, tmp_path, accum):
    runs = {}
    for name, kw in [("jit", {}), ("pmap", {"parallelism": "pmap"}),
                     ("accum", {"grad_accum_steps": accum}),
                     ("fsdp_accum", {"parallelism": "fsdp", "grad_accum_steps": accum})]:
        # SGD: Adam would amplify float noise in the exactly-zero gradient of the attention
        # key bias (softmax ignores it) into lr-sized differences between layouts.
        # No evaluation (eval_split ""): only the parameters are compared.
        config = tiny_digits_config(digits_dir, num_train_steps=5, checkpoint_every_steps=5,
                                    eval_split="", test_split=None, optimizer="sgd",
                                    learning_rate=0.1, **kw)
        trainer.train_and_evaluate(config, str(tmp_path / name))
        runs[name] = _params(str(tmp_path / name))
        # One compile of the step in every layout (pmap once recompiled at step 2: its
        # initial state lived on a mesh named otherwise than the step's output).
        with open(tmp_path / name / "metrics.json") as f:
            assert json.load(f)["compiles"] == 1, name
    assert jax.device_count() == 8  # conftest: 8 fake CPU devices
    for name in ("pmap", "accum", "fsdp_accum"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                     runs[name], runs["jit"])


@pytest.mark.slow  # two runs under pmap (~15 s)
def test_pmap_resumes_bit_identical_and_compiles_once(digits_dir, tmp_path):
    """A pmap checkpoint (saved from device 0's copy) restores onto every device, on the
    mesh the step's outputs live on: the resumed run compiles its step once."""
    config = tiny_digits_config(digits_dir, parallelism="pmap", eval_split="", test_split=None)
    trainer.train_and_evaluate(config, str(tmp_path / "full"))
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "12")  # as if killed after step 8
    trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
    jax.tree.map(np.testing.assert_array_equal, _params(str(tmp_path / "resumed")),
                 _params(str(tmp_path / "full")))
    with open(tmp_path / "resumed" / "metrics.json") as f:
        assert json.load(f)["compiles"] == 1


def test_batch_size_must_split_over_devices(digits_dir, tmp_path):
    config = tiny_digits_config(digits_dir, batch_size=12)
    with pytest.raises(ValueError, match="divisible by the number of devices"):
        trainer.train_and_evaluate(config, str(tmp_path))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(digits_dir, tmp_path, monkeypatch):
    from vit_jax.data import input_pipeline

    real_iter = input_pipeline.create_train_iter

    def corrupt_from_step_6(config, *, start_step=0, **kw):
        for step, batch in enumerate(real_iter(config, start_step=start_step, **kw), start_step):
            if step >= 5:  # the batch of step 6 (steps count from 1)
                batch["image"] = np.full_like(batch["image"], np.nan)
            yield batch

    monkeypatch.setattr(input_pipeline, "create_train_iter", corrupt_from_step_6)
    config = tiny_digits_config(digits_dir, sync_every_steps=1)
    with pytest.raises(errors.TrainingError, match="Non-finite training metrics at step 6"):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert os.listdir(tmp_path / "checkpoints") == ["4"]
    params = loading.load_model(str(tmp_path)).params  # the kept checkpoint is finite
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.mark.slow  # ~115 s each at load 12 on 2 cores (2026-12-07): 32x32, mock data
@pytest.mark.parametrize("name", ["b16", "b16_finetune"])
def test_imagenet_configs_run_under_mock_data(name, tmp_path):
    import importlib

    from vit_jax.model import vit as models

    config = importlib.import_module(f"configs.{name}").get_config()
    config.model.variant = "testing"
    config.model.dtype = "float32"
    config.image_size, config.batch_size, config.eval_batch_size = 32, 16, 16
    config.num_epochs, config.num_train_steps, config.warmup_steps = None, 2, 1
    config.log_every_steps = config.checkpoint_every_steps = 1
    config.eval_every_steps = 0
    config.data_dir = str(tmp_path / "tfds")
    if name == "b16_finetune":
        # A "released" checkpoint at a smaller resolution with a 21k-style head.
        pre = models.create_model("testing", num_classes=21, representation_size=32)
        params = pre.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))["params"]
        config.init_checkpoint = str(tmp_path / "pre.npz")
        checkpoint.save_npz(config.init_checkpoint, params)
    with tfds.testing.mock_data(num_examples=40):
        result = trainer.train_and_evaluate(config, str(tmp_path / "wd"))
    assert result["step"] == 2 and result["test"]["num_examples"] > 0
    loaded = loading.load_model(str(tmp_path / "wd"))
    assert loaded.params["head"]["kernel"].shape == (loaded.model.spec.hidden_size, 1000)
