"""vit_jax.export: a trained run as the official npz, a timm state dict, a HF directory.

The slow test trains a few steps on a folder of real PNGs, exports to all three formats
and loads each in the real library (timm `strict=True`, transformers `from_pretrained`),
comparing logits with vit_jax's. The fast tests cover what the command refuses.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_digits_config
from vit_core.errors import CheckpointError, ConfigError
from vit_core.files import write_official
from vit_core.hf_config import make_config
from vit_core.layouts import official_to_hf
from vit_core.params import official_shapes
from vit_core.spec import ViTSpec
from vit_jax.weights import exporting, loading

COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "owl": (40, 40, 200)}


def _random_official(spec: ViTSpec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.normal(0, 0.5, shape).astype(np.float32)
            for k, shape in official_shapes(spec).items()}


def _hf_dir(path, spec, flat, labels=None) -> None:
    from safetensors.numpy import save_file

    os.makedirs(path)
    save_file(official_to_hf(flat, spec), str(path / "model.safetensors"),
              metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(make_config(spec, labels=labels)))


def test_model_files_given_as_a_workdir_say_what_they_are_and_what_takes_them(tmp_path):
    spec = ViTSpec.from_variant("testing", num_classes=3, image_size=16)
    flat = _random_official(spec)
    write_official(tmp_path / "m.npz", flat, spec)
    with pytest.raises(CheckpointError, match=r"m\.npz is an \.npz checkpoint, not a training "
                       r"workdir: .*`python -m vit_torch .*m\.npz OUT` converts a model file, "
                       r"and predict / evaluate take it as --checkpoint\.$"):
        exporting.export(str(tmp_path / "m.npz"), str(tmp_path / "out.npz"))
    _hf_dir(tmp_path / "hf", spec.replace(gelu_approximate=False), flat)
    with pytest.raises(CheckpointError, match=r"hf is a Hugging Face / timm model directory, not "
                       r"a training workdir: `python -m vit_torch .*hf OUT\.npz` converts it"):
        exporting.export(str(tmp_path / "hf"), str(tmp_path / "out.npz"))
    with pytest.raises(CheckpointError, match="No workdir at"):
        exporting.export(str(tmp_path / "nowhere"), str(tmp_path / "out.npz"))
    with pytest.raises(ConfigError, match=r"is a directory; --format npz writes one file"):
        exporting.export(str(tmp_path / "hf"), str(tmp_path / "hf"), fmt="npz")
    assert not (tmp_path / "out.npz").exists()


def test_format_follows_the_output_path():
    assert exporting.format_of("a.npz", None) == "npz"
    assert exporting.format_of("a.safetensors", None) == "timm"
    assert exporting.format_of("out/vit-hf", None) == "hf"
    assert exporting.format_of("a.npz", "hf") == "hf"


@pytest.mark.parametrize("options, message", [
    ({"representation_size": 16}, "pre-logits layer"),
    ({"layer_norm_eps": 1e-12}, "LayerNorm epsilon is 1e-12"),
    ({"posemb": "sincos2d", "classifier": "gap"}, "fixed sin-cos position embedding"),
])
def test_timm_refuses_what_its_vit_cannot_build(options, message):
    with pytest.raises(CheckpointError, match=message):
        exporting.timm_create_args(ViTSpec.from_variant("testing", num_classes=3, **options))


def test_predict_takes_a_hugging_face_directory_with_its_labels(tmp_path):
    spec = ViTSpec.from_variant("testing", num_classes=3, image_size=16, layer_norm_eps=1e-12,
                                gelu_approximate=False)
    flat = _random_official(spec)
    _hf_dir(tmp_path / "hf", spec, flat, labels=["cat", "dog", "owl"])
    write_official(tmp_path / "m.npz", flat, spec)
    from_dir, from_npz = loading.load_model(str(tmp_path / "hf")), \
        loading.load_model(str(tmp_path / "m.npz"))
    assert from_dir.class_names == ["cat", "dog", "owl"]
    assert from_dir.model.spec == from_npz.model.spec
    images = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(loading.predict_logits(from_dir, images),
                                  loading.predict_logits(from_npz, images))
    with pytest.raises(ConfigError, match="holds one model, no steps"):
        loading.load_model(str(tmp_path / "m.npz"), step=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """6 steps on 3 classes × 8 PNGs (checkpoints at 3 and 6)."""
    from vit_jax.training import trainer

    root = tmp_path_factory.mktemp("pets")
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        os.makedirs(root / "train" / name)
        for i in range(8):
            pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (16, 16, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / "train" / name / f"{i}.png")
    config = tiny_digits_config(None, dataset=f"folder:{root}", image_size=16, batch_size=8,
                                eval_batch_size=8, num_train_steps=6, checkpoint_every_steps=3,
                                log_every_steps=3, test_split="")
    workdir = str(tmp_path_factory.mktemp("run") / "run")
    trainer.train_and_evaluate(config, workdir)
    return workdir


@pytest.mark.slow
def test_export_to_npz_timm_and_hf_loads_in_each_library_with_the_same_logits(trained,
                                                                              tmp_path):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    loaded = loading.load_model(trained)
    images = np.random.default_rng(2).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    want = loading.predict_logits(loaded, images)  # (3, 3)
    assert np.ptp(want) > 1e-2  # the trained head is no zero-init: the comparisons can fail
    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())  # (B, 3, H, W)

    fmt, line = exporting.export(trained, str(tmp_path / "run.npz"))
    assert fmt == "npz" and line.startswith(f"wrote {tmp_path / 'run.npz'}")
    np.testing.assert_array_equal(
        loading.predict_logits(loading.load_model(str(tmp_path / "run.npz")), images), want)
    exporting.export(trained, str(tmp_path / "step3.npz"), step=3)
    np.testing.assert_array_equal(
        loading.predict_logits(loading.load_model(str(tmp_path / "step3.npz")), images),
        loading.predict_logits(loading.load_model(trained, step=3), images))
    with pytest.raises(CheckpointError, match=r"has no checkpoint of step 4; it has steps "
                                              r"\[3, 6\]"):
        exporting.export(trained, str(tmp_path / "x.npz"), step=4)

    _, line = exporting.export(trained, str(tmp_path / "run.safetensors"))
    args = exporting.timm_create_args(loaded.model.spec)
    assert "strict=True" in line and "act_layer='gelu_tanh'" in line
    model = timm.create_model("vit_base_patch16_224", pretrained=False, **args).eval()
    model.load_state_dict(load_file(str(tmp_path / "run.safetensors")), strict=True)
    with torch.no_grad():
        np.testing.assert_allclose(model(nchw).numpy(), want, atol=1e-5, rtol=1e-4)

    exporting.export(trained, str(tmp_path / "run-hf"))
    hf = transformers.ViTForImageClassification.from_pretrained(str(tmp_path / "run-hf")).eval()
    assert hf.config.id2label == {0: "cat", 1: "dog", 2: "owl"}
    with torch.no_grad():
        np.testing.assert_allclose(hf(nchw).logits.numpy(), want, atol=1e-5, rtol=1e-4)

    # The reverse mistake: the workdir where the converter expects a HF directory.
    from vit_torch import files

    with pytest.raises(CheckpointError, match=r"is a vit_jax training workdir, not a Hugging "
                                              r"Face checkpoint: `python -m vit_jax.export "):
        files.read_hf(trained)
