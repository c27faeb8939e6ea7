"""vit_jax/data/image_check.py: every image decoded, decisions as TensorFlow's, one line.

The files are crafted with PIL and by hand (truncations, forged headers, a decompression
bomb's header); nothing is mocked. The decisions are checked against what the training
pipeline's decoder (`tf.image.decode_image(channels=3)`, tfds' Image feature) does.
"""

import io
import json
import os
import resource
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from vit_core.errors import DatasetError
from vit_jax import predict, visualize
from vit_jax.data import dataset_info, image_check, input_pipeline

RGB = np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8)  # (H, W, 3)


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    f = io.BytesIO()
    image.save(f, fmt, **kw)
    return f.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header for width×height 8-bit RGB, a tiny IDAT and IEND (a bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) is rewritten to declare width×height."""
    data = bytearray(_encode(Image.fromarray(RGB), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _png16(rgb: bool) -> bytes:
    """A 16-bit PNG (grayscale, or RGB: PIL cannot write 16-bit RGB), built by hand."""
    channels, colour = (3, 2) if rgb else (1, 0)
    rows = b"".join(b"\0" + bytes(range(10 * 2 * channels)) for _ in range(12))
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 12, 16, colour, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))


def _gif(frames: int) -> bytes:
    images = [Image.fromarray(np.roll(RGB, i, axis=0)).convert("P") for i in range(frames)]
    return _encode(images[0], "GIF", save_all=True, append_images=images[1:])


def _flip_idat_crc(png: bytes) -> bytes:
    data = bytearray(png)
    end = data.index(b"IDAT") + 4 + int.from_bytes(data[data.index(b"IDAT") - 4:][:4], "big")
    data[end] ^= 0xFF  # the first byte of IDAT's CRC; the pixels are intact
    return bytes(data)


PNG = _encode(Image.fromarray(RGB), "PNG")
JPEG = _encode(Image.fromarray(RGB), "JPEG")
MODES = {mode: _encode(Image.fromarray(RGB).convert(mode), "PNG") for mode in
         ("L", "LA", "RGBA", "P")}

# name → (file bytes, None if accepted else a part of the reason)
KINDS = {
    "rgb.png": (PNG, None),
    "rgb.jpg": (JPEG, None),
    "progressive.jpg": (_encode(Image.fromarray(RGB), "JPEG", progressive=True), None),
    "png_named.jpg": (PNG, None),
    "jpeg_named.png": (JPEG, None),
    "cmyk.jpg": (_encode(Image.fromarray(RGB).convert("CMYK"), "JPEG"), None),
    "gray16.png": (_png16(rgb=False), None),
    "rgb16.png": (_png16(rgb=True), None),
    "gray.png": (MODES["L"], None),
    "gray_alpha.png": (MODES["LA"], None),
    "rgba.png": (MODES["RGBA"], None),
    "palette.png": (MODES["P"], None),
    "empty.jpg": (b"", "cannot identify image file"),
    "truncated.jpg": (JPEG[: len(JPEG) // 2], "Truncated File Read"),
    "truncated.png": (PNG[: len(PNG) - 20], "Truncated File Read"),
    "idat_crc.png": (_flip_idat_crc(PNG), "broken PNG file"),
    # IEND's length field says 4 (a flipped bit): Pillow reads on, libpng refuses it.
    "iend.png": (PNG[:-12] + b"\0\0\0\x04" + PNG[-8:], "PNG end chunk (IEND)"),
    "iend_with_data.png": (PNG[:-12] + _chunk(b"IEND", b"\0\0\0\0"), None),  # libpng: fine
    "gif_named.png": (_gif(1), "a GIF image, not JPEG or PNG"),
    "animated_gif_named.png": (_gif(3), "a GIF image, not JPEG or PNG"),
    "bmp_named.jpg": (_encode(Image.fromarray(RGB), "BMP"), "a BMP image, not JPEG or PNG"),
    "text.png": (b"not an image\n", "cannot identify image file"),
    "bomb.png": (_png_declaring(100_000, 100_000), "too large to decode safely: Image size "
                 "(10000000000 pixels) exceeds limit of 178956970 pixels"),
    "bomb_just_over.png": (_png_declaring(10_000, 9_000), "too large to decode safely: Image "
                           "size (90000000 pixels) exceeds limit of 89478485 pixels"),
    "bomb.jpg": (_jpeg_declaring(65_000, 65_000), "too large to decode safely"),
}
BOMBS = ("bomb.png", "bomb_just_over.png", "bomb.jpg")
STRICTER = ("bmp_named.jpg",)  # TensorFlow reads it; refused by choice (module docstring)


def _write(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


@pytest.fixture(scope="module")
def tf():
    """TensorFlow (~7 s to import here, once): the decoder the decisions must agree with."""
    import tensorflow

    return tensorflow


@pytest.mark.parametrize("name", list(KINDS))
def test_each_kind_of_file_is_decided_as_tensorflow_decodes_it(tmp_path, tf, name):
    data, why = KINDS[name]
    path = _write(tmp_path / name, data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    bad = image_check.check_images(str(tmp_path), [path])
    assert time.perf_counter() - start < 1.0
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 64 * 1024  # KiB
    if why is None:
        assert bad == {}
    else:
        assert list(bad) == [path] and why in bad[path], bad
    if name in BOMBS:
        return  # TensorFlow would try to allocate the declared pixels
    try:
        decoded = tf.image.decode_image(data, channels=3, dtype=tf.uint8)  # tfds' call
        usable = decoded.shape.rank == 3  # a GIF decodes to (frames, H, W, 3)
    except tf.errors.InvalidArgumentError:
        usable = False
    assert usable == (why is None or name in STRICTER)


def test_random_corruptions_get_tensorflows_verdict(tmp_path, tf):
    """Bit flips, cuts and insertions: the check refuses exactly what TensorFlow refuses.

    (The same with 300 of each per image and two seeds, a progressive JPEG and a grayscale
    PNG too, agreed on all 2,400 when this was written.)
    """
    rng = np.random.default_rng(0)
    refused = 0
    for kind, base in (("jpg", JPEG), ("png", PNG)):
        for i in range(60):
            # A new name each time: a same-size rewrite within one mtime tick would reuse
            # the remembered verdict (the cache's key is (path, size, mtime)).
            path = str(tmp_path / f"{i}.{kind}")
            data = bytearray(base)
            at = int(rng.integers(len(data)))
            if i % 3 == 0:
                data[at] ^= 1 << int(rng.integers(8))
            elif i % 3 == 1:
                data = data[:at]
            else:
                data[at:at] = rng.integers(0, 256, int(rng.integers(1, 20)), np.uint8).tobytes()
            _write(path, bytes(data))
            ours = image_check.check_images(str(tmp_path), [path]) == {}
            try:
                theirs = tf.image.decode_image(bytes(data), channels=3).shape.rank == 3
            except tf.errors.InvalidArgumentError:
                theirs = False
            assert ours == theirs, (i, at)
            refused += not ours
    assert 40 < refused < 110  # both verdicts occur: the test can fail either way


def _folder(root, bad: dict[str, bytes] = (), per_class: int = 3) -> str:
    for name in ("cat", "dog"):
        for i in range(per_class):
            _write(root / "train" / name / f"{i}.png", PNG)
    for rel, data in dict(bad).items():
        _write(root / rel, data)
    return str(root)


def _check(root) -> None:
    root = str(root)
    image_check.check_folder(root, [os.path.join(root, "train", c) for c in ("cat", "dog")])


def test_bad_files_are_named_in_one_line(tmp_path):
    bad = {f"train/cat/z{i}.jpg": KINDS["truncated.jpg"][0] for i in range(6)}
    bad["train/dog/anim.gif"] = _gif(2)  # an image training would skip
    root = _folder(tmp_path, bad)
    with pytest.raises(DatasetError) as e:
        _check(root)
    message = str(e.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"7 files in {root} are not readable JPEG or PNG images: "
                              f"{root}/train/cat/z0.jpg (Truncated File Read), ")
    assert message.endswith(" and 2 more; fix or remove them.")
    one = _folder(tmp_path / "one", {"train/dog/anim.gif": _gif(2)})
    with pytest.raises(DatasetError, match=(
            rf"^{one}/train/dog/anim\.gif is not a readable JPEG or PNG image \(a \.gif file: "
            r"training reads \.jpg/\.jpeg/\.png files only, convert it\); fix or remove it ")):
        _check(one)


def test_other_files_in_class_folders_are_reported(tmp_path, capsys):
    root = _folder(tmp_path, {"train/cat/notes.txt": b"hi", "train/dog/.DS_Store": b"\0",
                              "train/dog/extra/0.png": PNG, "train/labels.csv": b"a,b"})
    _check(root)  # not images: training skips them, so they do not stop it
    assert capsys.readouterr().err == (
        f"warning: 3 entries in the split and class folders of {root} are not .jpg/.jpeg/.png "
        f"images and are not used: {root}/train/labels.csv, {root}/train/cat/notes.txt, "
        f"{root}/train/dog/extra/\n")


def test_verdicts_are_remembered_by_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("VIT_JAX_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "data")
    _check(root)
    [kept] = os.listdir(tmp_path / "cache" / "image_check")
    with open(tmp_path / "cache" / "image_check" / kept) as f:
        cache = json.load(f)
    assert sorted(cache["files"]) == [f"train/{c}/{i}.png" for c in ("cat", "dog")
                                      for i in range(3)]
    path = tmp_path / "data" / "train" / "cat" / "0.png"
    stat = path.stat()
    # Garbage of the same size and mtime: the remembered verdict is used (nothing decoded).
    path.write_bytes(b"x" * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _check(root)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # now it changed
    with pytest.raises(DatasetError, match=rf"^{path} is not a readable JPEG or PNG image "):
        _check(root)


def test_the_check_writes_nothing_into_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VIT_JAX_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "data")
    before = sorted(p for p in (tmp_path / "data").rglob("*"))
    _check(root)
    assert sorted(p for p in (tmp_path / "data").rglob("*")) == before


def test_progress_line_on_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(image_check, "PROGRESS_AFTER_S", 0.0)  # draw at once, every file
    monkeypatch.setattr(image_check, "PROGRESS_EVERY_S", 0.0)
    root = _folder(tmp_path, per_class=2)
    _check(root)
    *progress, summary = capsys.readouterr().err.splitlines()
    assert progress[-1].startswith("checking images: 4/4 files, ")
    assert progress[-1].endswith(" files/s, ETA 0 s")
    assert summary.startswith(f"checked 4 images of {root} in 0 s (")
    assert summary.endswith(" files/s; 0 unchanged since the last check)")


def test_a_file_broken_after_the_check_is_named_by_the_pipeline(tmp_path):
    from conftest import tiny_digits_config

    root = _folder(tmp_path, per_class=6)
    _folder(tmp_path / "val")  # a val/ folder: all 12 of train/ are read in 3 batches
    os.rename(tmp_path / "val" / "train", tmp_path / "val_split")
    os.rename(tmp_path / "val_split", tmp_path / "val")
    dataset = f"folder:{root}"
    dataset_info.get_dataset_info(dataset, None)  # opened and checked: every file is fine
    path = tmp_path / "train" / "dog" / "3.png"
    path.write_bytes(PNG[: len(PNG) // 2])  # then one is cut in half
    config = tiny_digits_config(None, dataset=dataset, image_size=8, augment="none")
    for batches in (input_pipeline.create_train_iter(config, global_batch_size=4),
                    input_pipeline.create_eval_iter(config, "train", global_batch_size=4)):
        with pytest.raises(DatasetError) as e:
            for _ in range(3):
                next(batches)
        assert str(e.value) == (
            f"Reading the images of {root} failed: 1 file(s) changed since the check and "
            f"cannot be decoded: {path} (Truncated File Read); fix or remove them and "
            "rerun the same command.")


@pytest.mark.parametrize("tool", [predict, visualize])
@pytest.mark.parametrize("name", ["bomb.png", "bomb.jpg", "truncated.jpg", "empty.jpg",
                                  "animated_gif_named.png"])
def test_predict_and_visualize_refuse_a_bad_image_in_one_line(tmp_path, capsys, tool, name):
    data, why = KINDS[name]
    path = _write(tmp_path / name, data)
    args = ["--checkpoint", str(tmp_path / "never_read.npz"), path]
    if tool is visualize:
        args += ["--out", str(tmp_path / "out.png")]
    start = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        tool.main(args)
    assert time.perf_counter() - start < 2.0
    err = capsys.readouterr().err
    if name == "animated_gif_named.png":  # predict reads any format: the first frame
        assert e.value.code == 2 and "never_read.npz" in err
        return
    assert e.value.code == 2 and err.startswith(f"error: Cannot read {path} as an image: ")
    assert why in err and err.count("\n") == 1
