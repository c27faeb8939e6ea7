"""`folder:PATH` datasets (vit_jax/data/folder.py): splits, checks, and a real run.

Every folder here is real PNG/JPEG files written with PIL; nothing is mocked.
"""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_digits_config
from vit_core.errors import DatasetError
from vit_jax.data import dataset_info, input_pipeline
from vit_jax.tools import prediction
from vit_jax.training import trainer
from vit_jax.weights import loading

COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "owl": (40, 40, 200)}
FORMATS = {"cat": "png", "dog": "jpg", "owl": "png"}  # PNG and JPEG, RGB and RGBA
PER_CLASS = 12


def _image(name: str, i: int) -> Image.Image:
    """16×16 in the class's colour, with noise that makes every file different."""
    seed = [ord(c) for c in name] + [i]
    noise = np.random.default_rng(seed).integers(-30, 30, (16, 16, 3))
    pixels = np.clip(np.array(COLOURS[name]) + noise, 0, 255).astype(np.uint8)  # (16, 16, 3)
    image = Image.fromarray(pixels)
    return image.convert("RGBA") if name == "owl" else image


def _write(root, split: str, count: int, order=None) -> None:
    for name in COLOURS:
        os.makedirs(root / split / name, exist_ok=True)
        for i in order or range(count):
            _image(name, i).save(root / split / name / f"{i:02d}.{FORMATS[name]}")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """3 classes × 12 training images, no val/ (held out), 2 test images per class."""
    root = tmp_path_factory.mktemp("flowers")
    _write(root, "train", PER_CLASS)
    _write(root, "test", 2)
    return root


def _encoded(dataset: str, split: str) -> list[tuple[bytes, int]]:
    records = dataset_info.open_split(dataset, None, split).records
    return [(ex["image"].numpy(), int(ex["label"])) for ex in records]


def test_info_and_held_out_split(images, capfd):
    name = f"folder:{images}"
    info = dataset_info.get_dataset_info(name, None)
    assert info.class_names == ["cat", "dog", "owl"] and info.num_classes == 3
    assert info.num_examples == {"train": 33, "validation": 3, "test": 6}
    assert info.image_channels == 3
    line = info.summary
    assert line.startswith(f"folder dataset {images}: 3 classes; train 33, validation 3, "
                           "test 6 images")
    assert "held out from train/: 10% of each class, at least 1, seed 0" in line
    assert "folder dataset" not in "".join(capfd.readouterr())  # train and prepare print it
    train_set, held_out = _encoded(name, "train"), _encoded(name, "validation")
    assert sorted(label for _, label in held_out) == [0, 1, 2]  # one per class (10% of 12)
    assert not {b for b, _ in train_set} & {b for b, _ in held_out}  # disjoint
    assert len({b for b, _ in train_set + held_out}) == 3 * PER_CLASS  # and all of train/
    # Slices work as on tfds datasets (ImageFolder alone refuses them); tfds rounds to nearest.
    half = round(33 * 50 / 100)
    assert dataset_info.split_num_examples(name, None, "train[:50%]+validation") == half + 3


def test_held_out_split_ignores_file_system_order(images, tmp_path):
    # The same files written in reverse order (another directory order on most file systems).
    _write(tmp_path, "train", PER_CLASS, order=range(PER_CLASS - 1, -1, -1))
    assert _encoded(f"folder:{tmp_path}", "validation") == _encoded(f"folder:{images}",
                                                                    "validation")


def test_val_folder_is_the_validation_split(tmp_path):
    _write(tmp_path, "train", 3)
    _write(tmp_path, "val", 2)
    info = dataset_info.get_dataset_info(f"folder:{tmp_path}", None)
    assert info.num_examples == {"train": 9, "validation": 6}  # nothing held out


def test_pipeline_decodes_folder_images_like_any_dataset(images):
    config = tiny_digits_config(None, dataset=f"folder:{images}", image_size=16,
                                augment="inception_crop", flip=True)
    batch = next(input_pipeline.create_train_iter(config, global_batch_size=8))
    assert batch["image"].shape == (8, 16, 16, 3) and batch["image"].dtype == np.float32
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
    evals = list(input_pipeline.create_eval_iter(config, "test", global_batch_size=4))
    labels = np.concatenate([b["label"] for b in evals])
    mask = np.concatenate([b["mask"] for b in evals])
    assert sorted(labels[mask == 1]) == [0, 0, 1, 1, 2, 2]
    # The eval transform at 16² of a plain-colour class: its colour, scaled to [-1, 1].
    red = evals[0]["image"][list(labels).index(0)].mean(axis=(0, 1))  # (3,)
    np.testing.assert_allclose(red, np.array(COLOURS["cat"]) / 127.5 - 1, atol=0.1)


@pytest.mark.slow  # ~110 s on 2 shared cores: compiles the train, eval and predict steps
def test_train_evaluate_and_predict_with_folder_class_names(images, tmp_path, capsys):
    config = tiny_digits_config(
        None, dataset=f"folder:{images}", test_split="test", augment="inception_crop",
        flip=True, eval_resize_ratio=0.875, batch_size=16, eval_batch_size=8,
        num_train_steps=6, log_every_steps=3, checkpoint_every_steps=6)
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["step"] == 6
    assert metrics["eval"]["num_examples"] == 3 and metrics["test"]["num_examples"] == 6
    loaded = loading.load_model(workdir)
    assert loaded.class_names == ["cat", "dog", "owl"]
    paths = [str(images / "test" / n / f"00.{FORMATS[n]}") for n in COLOURS]
    results = prediction.predict(loaded, paths, top_k=3)
    for path, top in zip(paths, results, strict=True):
        print(prediction.format_prediction(path, top))
        assert sorted(name for name, _ in top) == ["cat", "dog", "owl"]
    assert "owl (" in capsys.readouterr().out


def _error(root) -> str:
    with pytest.raises(DatasetError) as err:
        dataset_info.get_dataset_info(f"folder:{root}", None)
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_missing_or_empty_folder(tmp_path):
    assert "does not exist" in _error(tmp_path / "nowhere")
    assert "has no train/ folder (it has no subfolders)" in _error(tmp_path)
    os.makedirs(tmp_path / "train")
    assert "has no .jpg/.jpeg/.png images" in _error(tmp_path)


def test_class_folders_directly_under_path(tmp_path):
    _write(tmp_path, "train", 1)
    for name in COLOURS:  # PATH/cat/... instead of PATH/train/cat/...
        shutil.move(tmp_path / "train" / name, tmp_path / name)
    os.rmdir(tmp_path / "train")
    assert "has no train/ folder (it holds cat, dog, owl)" in _error(tmp_path)


def test_unknown_top_level_folder(tmp_path):
    _write(tmp_path, "train", 2)
    os.makedirs(tmp_path / "extra" / "cat")
    assert "holds folders other than train/, val/ and test/: extra" in _error(tmp_path)


def test_single_class(tmp_path):
    _write(tmp_path, "train", 2)
    shutil.rmtree(tmp_path / "train" / "dog")
    shutil.rmtree(tmp_path / "train" / "owl")
    assert "has a single class (cat)" in _error(tmp_path)


def test_empty_class_folder(tmp_path):
    _write(tmp_path, "train", 2)
    os.makedirs(tmp_path / "train" / "yak")
    assert "Class folders without .jpg/.jpeg/.png images in" in _error(tmp_path)


def test_classes_differ_between_train_and_val(tmp_path):
    _write(tmp_path, "train", 2)
    _write(tmp_path, "val", 1)
    shutil.move(tmp_path / "val" / "owl", tmp_path / "val" / "emu")
    message = _error(tmp_path)
    assert f"Class folders of {tmp_path}/val differ from those of {tmp_path}/train" in message
    assert "only in val/: emu; missing from val/: owl" in message


def test_class_with_one_image_cannot_be_held_out(tmp_path):
    _write(tmp_path, "train", 1)
    assert "Class cat has 1 image in" in _error(tmp_path)


@pytest.mark.parametrize("content, why", [
    (b"not an image at all\n", "cannot identify image file"),
    (None, ""),  # a PNG cut in half: PIL's verify() finds the broken chunk
])
def test_unreadable_image_is_named(tmp_path, content, why):
    _write(tmp_path, "train", 3)
    bad = tmp_path / "train" / "dog" / "zz_bad.png"
    if content is None:
        whole = (tmp_path / "train" / "cat" / "00.png").read_bytes()
        content = whole[: len(whole) // 2]
    bad.write_bytes(content)
    message = _error(tmp_path)
    assert message.startswith(f"{bad} is not a readable JPEG or PNG image (") and why in message
    assert message.endswith(f"; fix or remove it from {tmp_path}.")


def test_unknown_split_name(images):
    config = tiny_digits_config(None, dataset=f"folder:{images}")
    with pytest.raises(DatasetError, match=r"has no split 'val' \(from 'val\[:2\]'\); its splits "
                                           r"are train, validation, test\."):
        input_pipeline.create_eval_iter(config, "val[:2]", global_batch_size=8)

