"""vit_jax.weights.checkpoint: the official npz layout, round trips, checks, posemb resize."""

import os
import pickle
import stat
import subprocess
import sys

import jax
import numpy as np
import pytest

from vit_core import errors, npz
from vit_core.posemb import resize_posemb
from vit_jax.model import vit as models
from vit_jax.weights import checkpoint


@pytest.fixture(scope="module")
def tiny():
    model = models.create_model("testing", num_classes=5, representation_size=16)
    params = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))["params"]
    return model, params


def test_npz_keys_are_the_official_layout(tiny, tmp_path):
    _, params = tiny
    checkpoint.save_npz(tmp_path / "m.npz", params)
    with np.load(tmp_path / "m.npz") as f:
        keys = set(f.files)
    assert {
        "embedding/kernel", "embedding/bias", "cls", "Transformer/posembed_input/pos_embedding",
        "Transformer/encoderblock_0/LayerNorm_0/scale",
        "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
        "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/out/bias",
        "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel",
        "Transformer/encoderblock_1/LayerNorm_2/bias", "Transformer/encoder_norm/scale",
        "pre_logits/kernel", "head/kernel", "head/bias",
    } <= keys
    assert len(keys) == len(jax.tree.leaves(params))


def test_round_trip_is_bit_exact_plain_and_scan(tiny, tmp_path):
    _, params = tiny
    checkpoint.save_npz(tmp_path / "a.npz", params)
    loaded = checkpoint.load_npz(tmp_path / "a.npz")
    jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, params))
    stacked = checkpoint.load_npz(tmp_path / "a.npz", scan=True)
    assert stacked["Transformer"]["encoderblock"]["MlpBlock_3"]["Dense_0"]["kernel"].shape[0] == 2
    checkpoint.save_npz(tmp_path / "b.npz", stacked)
    a, b = npz.read_npz(tmp_path / "a.npz"), npz.read_npz(tmp_path / "b.npz")
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_check_params_names_every_problem(tiny):
    _, params = tiny
    flat = npz.flatten(jax.tree.map(np.asarray, params))
    del flat["cls"]
    flat["extra/kernel"] = np.zeros(3)
    flat["head/kernel"] = np.zeros((16, 6))
    with pytest.raises(errors.CheckpointError) as e:
        checkpoint.check_params(npz.unflatten(flat), params)
    msg = str(e.value)
    assert "missing key cls" in msg and "unexpected key extra/kernel" in msg
    assert "head/kernel: checkpoint (16, 6), model (16, 5)" in msg


def _npz_bytes(tmp_path) -> bytes:
    npz.write_npz(tmp_path / "ok.npz", {"a": np.arange(1000.0)})
    return (tmp_path / "ok.npz").read_bytes()


@pytest.mark.parametrize(
    "content, guess",
    [
        pytest.param(
            lambda tmp: _npz_bytes(tmp)[:2000],
            "lacks the zip directory at its end",
            id="truncated-zip",
        ),
        pytest.param(
            lambda tmp: np.random.default_rng(0).bytes(64), "an unknown format", id="random-bytes"
        ),
        pytest.param(lambda tmp: b"", "the file is empty", id="empty"),
        pytest.param(
            lambda tmp: pickle.dumps({"a": 1}), "looks like a Python pickle", id="pickled-object"
        ),
        pytest.param(
            lambda tmp: b"\x93NUMPY\x01\x00" + b" " * 118, "a single .npy array", id="npy"
        ),
    ],
)
def test_a_file_that_is_not_a_zip_is_named_as_such(tmp_path, content, guess):
    data = content(tmp_path)
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    with pytest.raises(errors.CheckpointError) as e:
        npz.read_npz(path)
    message = str(e.value)
    assert message.startswith(f"Not a valid .npz (zip) file: {path} ({len(data)} bytes, ")
    assert f"first bytes {data[:16]!r}" in message and guess in message
    assert "pickled" not in message  # np.load's word for any file it does not recognise


def test_refuses_pickled_arrays_and_reports_corrupt_members(tmp_path):
    np.savez(tmp_path / "p.npz", evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(errors.CheckpointError, match="contains pickled Python objects"):
        npz.read_npz(tmp_path / "p.npz")
    data = bytearray(_npz_bytes(tmp_path))
    data[len(data) // 2] ^= 0xFF  # inside the array's bytes: a zip whose CRC check fails
    (tmp_path / "crc.npz").write_bytes(bytes(data))
    with pytest.raises(errors.CheckpointError, match=r"not a readable \.npz file \(truncated"):
        npz.read_npz(tmp_path / "crc.npz")
    with pytest.raises(errors.CheckpointError, match="not found"):
        npz.read_npz(tmp_path / "missing.npz")


def _linear_zoom_reference(grid, new):
    """Corner-aligned linear interpolation written out by hand (what zoom(order=1) does)."""
    old = grid.shape[0]
    pos = np.arange(new) * (old - 1) / (new - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, old - 2)
    frac = pos - lo
    rows = grid[lo] * (1 - frac)[:, None, None] + grid[lo + 1] * frac[:, None, None]
    return rows[:, lo] * (1 - frac)[None, :, None] + rows[:, lo + 1] * frac[None, :, None]


def test_resize_posemb_is_corner_aligned_linear_and_keeps_class_token():
    rng = np.random.default_rng(0)
    posemb = rng.normal(size=(1, 1 + 14 * 14, 8)).astype(np.float32)
    out = resize_posemb(posemb, (24, 24), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 24 * 24, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], posemb[:, 0])
    expected = _linear_zoom_reference(posemb[0, 1:].reshape(14, 14, 8).astype(np.float64), 24)
    np.testing.assert_allclose(out[0, 1:].reshape(24, 24, 8), expected, atol=1e-5)
    # Corners are kept exactly (not so with half-pixel-centred interpolation).
    np.testing.assert_allclose(out[0, 1], posemb[0, 1], atol=1e-6)
    same = resize_posemb(posemb, (14, 14))
    np.testing.assert_array_equal(same, posemb)


def test_adapt_pretrained_for_finetuning(tiny):
    _, params = tiny  # 32x32 images, representation layer, 5 classes
    target = models.create_model("testing", num_classes=3)
    init = target.init(jax.random.key(1), np.zeros((1, 48, 48, 3), np.float32))["params"]
    adapted = checkpoint.adapt_pretrained(params, init)
    assert "pre_logits" not in adapted
    assert adapted["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 145, 32)
    np.testing.assert_array_equal(adapted["head"]["kernel"], np.asarray(init["head"]["kernel"]))
    np.testing.assert_array_equal(adapted["embedding"]["kernel"], params["embedding"]["kernel"])
    with pytest.raises(errors.CheckpointError, match="head/kernel"):
        checkpoint.adapt_pretrained(params, init, reinit_head=False)


def test_checkpoint_module_does_not_import_jax():
    code = ("import sys, vit_jax.weights.checkpoint, vit_jax.weights.pretrained, "
            "vit_core.variants; assert 'jax' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_saved_npz_gets_the_usual_file_mode(tmp_path):
    """Not mkstemp's 0600: what any new file gets under the process's umask."""
    old = os.umask(0o022)
    try:
        checkpoint.save_npz(tmp_path / "a.npz", {"head": {"bias": np.zeros(3, np.float32)}})
        assert stat.S_IMODE(os.stat(tmp_path / "a.npz").st_mode) == 0o644
        os.umask(0o077)
        checkpoint.save_npz(tmp_path / "b.npz", {"head": {"bias": np.zeros(3, np.float32)}})
        assert stat.S_IMODE(os.stat(tmp_path / "b.npz").st_mode) == 0o600
    finally:
        os.umask(old)
