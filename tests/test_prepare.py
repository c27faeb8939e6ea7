"""`python -m vit_jax.prepare` and `dataset_info.prepare_dataset`, on datasets that need no
network: the bundled digits builder and an image folder. ImageNet is checked only up to
its manual files (nothing is downloaded)."""

import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest
from PIL import Image

from vit_core.errors import DatasetError
from vit_jax import prepare
from vit_jax.data import dataset_info
from vit_jax.data.dataset_info import DatasetNotFoundError

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
    assert lines[0] == f"preparing digits in {data_dir} (bundled: nothing is downloaded)..."
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
    before = sorted(tmp_path.rglob("*"))
    prepare.main([f"folder:{tmp_path}"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"checking the image folder {tmp_path} (its layout and every image; "
                      "nothing is written: training reads the images from there)...")
    assert out[1].startswith(f"folder dataset {tmp_path}: 2 classes; train 4, validation 2 "
                             "images (held out from train/")
    assert out[2].startswith(f"folder:{tmp_path} is ready: 2 classes; train 4, validation 2 "
                             "examples (")
    assert len(out) == 3 and sorted(tmp_path.rglob("*")) == before  # nothing written


def _online(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


@pytest.mark.slow  # ~25 s here, nearly all of it the subprocess importing TensorFlow
@pytest.mark.skipif(_online("www.cs.toronto.edu"), reason="checks the offline failure")
def test_offline_download_fails_in_seconds_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import sys, time; from vit_jax import prepare; from vit_jax.data import dataset_info; "
            "dataset_info.import_tensorflow(); print(f'start {time.time()}', flush=True); "
            "prepare.main(sys.argv[1:])")
    run = subprocess.run([sys.executable, "-c", code, "cifar10", "--data_dir", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    end = time.time()
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.splitlines() == [
        "error: Downloading 'cifar10' failed: cannot reach https://www.cs.toronto.edu/~kriz/"
        "cifar-10-binary.tar.gz (ConnectionError); check the network or proxy, then run the "
        f"same command again (finished downloads are kept in {tmp_path}/downloads)."]
    started = float(run.stdout.splitlines()[0].split()[1])
    assert end - started < 20  # 1.7 s measured (tfds' own 10 retries: 3.5 min)
    assert run.stdout.splitlines()[1].startswith(f"preparing cifar10 in {tmp_path}: downloading")


def test_unknown_split_of_a_tfds_dataset_is_one_line(digits_dir):
    with pytest.raises(DatasetError, match=r"^Dataset 'digits' has no split 'valid' \(from "
                                           r"'valid\[:10%\]'\); its splits are train, "):
        dataset_info.split_num_examples("digits", digits_dir, "valid[:10%]")
