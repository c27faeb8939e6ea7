"""configs/s16_i1k.py (big_vision's ViT-S/16 ImageNet recipe): its fields, its `:300ep`
argument through the flag parser, and both variants training under mock ImageNet."""

import os

import pytest
import tensorflow_datasets as tfds
from absl import flags
from ml_collections import config_flags

from configs import s16_i1k
from vit_core import errors
from vit_jax.training import run_plan, trainer
from vit_jax.weights import loading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fields_are_big_visions():
    config, long = s16_i1k.get_config(), s16_i1k.get_config("300ep")
    assert (config.num_epochs, long.num_epochs) == (90.0, 300.0)
    long.num_epochs = 90.0
    assert long.to_dict() == config.to_dict()  # 300ep changes nothing else
    assert (config.batch_size, config.learning_rate, config.weight_decay) == (1024, 1e-3, 1e-4)
    assert config.weight_decay_convention == "decoupled" and config.adam_mu_dtype == "bfloat16"
    assert (config.warmup_steps, config.schedule, config.grad_clip_norm) == (10_000, "cosine", 1)
    assert config.mixup_alpha == 0.2 and config.cutmix_alpha == 0 and config.label_smoothing == 0
    assert tuple(config.randaugment) == (2, 10) and config.flip and config.crop_min_area == 0.05
    assert config.image_size == 224 and config.image_size / config.eval_resize_ratio == 256
    assert (config.train_split, config.eval_split) == ("train[:99%]", "train[99%:]")
    m = config.model
    assert (m.variant, m.classifier, m.posemb, m.representation_size) == (
        "S/16", "gap", "sincos2d", 384)
    # 90 epochs of train[:99%] (1,268,355 images) at batch 1024.
    assert run_plan.train_steps(config, 1_268_355, run_plan.Origin())[0] == 111_477


def test_argument_through_the_config_flag():
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
    values(["prog", "--config", os.path.join(REPO, "configs", "s16_i1k.py") + ":300ep"])
    assert values.config.num_epochs == 300.0
    with pytest.raises(errors.ConfigError, match="Unknown config argument"):
        s16_i1k.get_config("301ep")


@pytest.mark.slow  # two real train_and_evaluate runs (~50 s each on a loaded 2-core box)
@pytest.mark.parametrize("arg", ["runlocal", "300ep,runlocal"])
def test_runs_under_mock_imagenet(arg, tmp_path):
    config = s16_i1k.get_config(arg)
    config.data_dir = str(tmp_path / "tfds")
    with tfds.testing.mock_data(num_examples=40):
        result = trainer.train_and_evaluate(config, str(tmp_path / "wd"))
        loaded = loading.load_model(str(tmp_path / "wd"))  # reads the class names
    assert result["step"] == 2 and result["test"]["num_examples"] > 0
    assert loaded.params["pre_logits"]["kernel"].shape == (32, 32)  # width → width, tanh
    assert loaded.params["head"]["kernel"].shape == (32, 1000)
    assert "cls" not in loaded.params and "posembed_input" not in loaded.params["Transformer"]
