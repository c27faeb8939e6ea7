"""`python -m vit_jax.prepare` and `dataset_info.prepare_dataset`, on datasets that need no
network: the bundled digits builder and an image folder. ImageNet is checked only up to
its manual files (nothing is downloaded)."""

import os
import pathlib
import subprocess
import sys

import pytest
from PIL import Image

from vit_core.errors import DatasetError
from vit_jax import dataset_info, prepare
from vit_jax.dataset_info import DatasetNotFoundError

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~60 s on 2 shared cores: a fresh process imports TF and builds digits
def test_cli_prepares_digits_with_clean_output(tmp_path):
    data_dir = tmp_path / "tfds"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "vit_jax.prepare", "digits", "--data_dir", str(data_dir)],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"preparing digits in {data_dir} (a large dataset takes hours)..."
    assert lines[1].startswith(
        "digits is ready: 10 classes; train 1293, validation 144, test 360 examples (")
    assert len(lines) == 2, run.stdout  # tfds' "Downloading and preparing ... Unknown size"
    for noise in ("\r", "\x1b[", "Unknown size", "examples/s"):  # no tqdm bars in a log
        assert noise not in run.stdout + run.stderr, noise
    assert (data_dir / "digits" / "1.0.0" / "dataset_info.json").exists()


def test_prepare_dataset_is_a_no_op_once_prepared(digits_dir):
    info = dataset_info.prepare_dataset("digits", digits_dir)
    assert info.num_examples == {"train": 1293, "validation": 144, "test": 360}
    assert info.class_names == [str(i) for i in range(10)]


def test_unknown_name_is_one_error_line_with_close_names(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        prepare.main(["cifar_10", "--data_dir", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Unknown tfds dataset 'cifar_10'")
    assert "did you mean 'cifar10'" in err[0]
    assert f"`python -m vit_jax.prepare cifar10 --data_dir {tmp_path}`" in err[0]
    assert not (tmp_path / "downloads").exists()  # nothing fetched


def test_imagenet_names_the_missing_manual_files_and_where(tmp_path):
    manual = tmp_path / "manual"
    with pytest.raises(DatasetNotFoundError) as err:
        dataset_info.prepare_dataset("imagenet2012", str(tmp_path / "tfds"))
    default = tmp_path / "tfds" / "downloads" / "manual"
    assert str(err.value) == (
        "Dataset 'imagenet2012' cannot be downloaded automatically: place "
        f"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from image-net.org) in {default}, "
        "or pass --manual_dir DIR with the folder that holds them.")
    os.makedirs(manual)
    (manual / "ILSVRC2012_img_train.tar").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match=rf"place ILSVRC2012_img_val\.tar \(from "
                                                   rf"image-net\.org\) in {manual}, or"):
        dataset_info.prepare_dataset("imagenet2012", str(tmp_path / "tfds"),
                                     manual_dir=str(manual))
    assert not (tmp_path / "tfds" / "imagenet2012").exists()


def test_folder_is_checked_and_summarised(tmp_path, capsys):
    for name, colour in [("a", (255, 0, 0)), ("b", (0, 0, 255))]:
        os.makedirs(tmp_path / "train" / name)
        for i in range(3):
            Image.new("RGB", (8, 8), colour).save(tmp_path / "train" / name / f"{i}.png")
    prepare.main([f"folder:{tmp_path}"])
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(f"folder:{tmp_path} is ready: 2 classes; train 4, validation 2 "
                              "examples (")


def test_unknown_split_of_a_tfds_dataset_is_one_line(digits_dir):
    with pytest.raises(DatasetError, match=r"^Dataset 'digits' has no split 'valid' \(from "
                                           r"'valid\[:10%\]'\); its splits are train, "):
        dataset_info.split_num_examples("digits", digits_dir, "valid[:10%]")
