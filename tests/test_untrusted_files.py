"""Checkpoint files a user hands over are untrusted: broken or hostile, each is one line.

Every file here is crafted to declare sizes its bytes do not hold (or to be a pickle, or
a zip bomb), and must end in one `CheckpointError` (one `error:` line, exit 2, from the
command line tools) quickly and in bounded memory. The images' side is
tests/test_image_check.py.
"""

import io
import json
import os
import pickle
import resource
import shutil
import struct
import time
import zipfile

import numpy as np
import pytest
import torch

from vit_core import errors, npz
from vit_torch import __main__ as convert_cli
from vit_torch import convert, files
from vit_torch.model import create_model


def _npy(shape, dtype="<f4", data: bytes = b"") -> bytes:
    """An .npy member: a genuine header for `shape`, followed by `data` (any length)."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        f, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return f.getvalue() + data


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> str:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(path)


def _read_error(path) -> str:
    """read_npz's one-line message; the call must be fast and stay small in memory."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(errors.CheckpointError) as e:
        npz.read_npz(path)
    assert time.perf_counter() - start < 1.0
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 64, grown_mib  # nothing of the declared size was allocated
    message = str(e.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_npz_member_declaring_an_absurd_shape(tmp_path):
    path = _zip(tmp_path / "a.npz", {"w.npy": _npy((10**6, 10**6), data=b"\0" * 16)})
    assert _read_error(path) == (
        f"{path} is not a readable .npz file: member w.npy declares shape (1000000, 1000000) "
        "of float32 (4000000000000 bytes) but holds 16 bytes (truncated or forged).")


def test_npz_member_shape_larger_than_its_bytes(tmp_path):
    path = _zip(tmp_path / "a.npz", {"ok.npy": _npy((2,), data=b"\0" * 8),
                                     "w.npy": _npy((100,), data=b"\0" * 40)})
    assert _read_error(path) == (
        f"{path} is not a readable .npz file: member w.npy declares shape (100,) of float32 "
        "(400 bytes) but holds 40 bytes (truncated or forged).")


def test_npz_member_with_absurd_declared_uncompressed_size(tmp_path):
    """A deflated member whose zip directory declares ~4 GB: refused before reading."""
    small = _zip(tmp_path / "s.npz", {"w.npy": _npy((4,), data=b"\0" * 16)}, zipfile.ZIP_DEFLATED)
    with open(small, "rb") as f:
        data = bytearray(f.read())
    central = data.rindex(b"PK\x01\x02")  # the member's central directory record
    data[central + 24:central + 28] = struct.pack("<I", 0xFFFFFFF0)  # uncompressed size
    path = tmp_path / "a.npz"
    path.write_bytes(bytes(data))
    assert _read_error(path) == (
        f"{path} is not a usable .npz file: its compressed members declare 4294967280 bytes "
        f"uncompressed, more than 16x its size on disk (a zip bomb?); re-save it with "
        "numpy.savez (uncompressed).")


def test_npz_zip_bomb(tmp_path, monkeypatch):
    """A genuine bomb: 8 MiB of zeros deflate to ~8 kB (1000x)."""
    monkeypatch.setattr(npz, "_EXPANSION_ALLOWANCE", 0)  # the 64 MiB slack, off: a small bomb
    zeros = _npy((2 << 20,), data=bytes(8 << 20))
    path = _zip(tmp_path / "a.npz", {"w.npy": zeros}, zipfile.ZIP_DEFLATED)
    assert "a zip bomb?" in _read_error(path)


@pytest.mark.parametrize("members, why", [
    ({"w.txt": b"hello"}, "member w.txt is not an .npy array."),
    ({"w.npy": b"not an npy header at all"}, "member w.npy is not a valid .npy array ("),
    ({"w.npy": _npy((-1, 2))}, "member w.npy declares the shape (-1, 2)."),
    ({"w.npy": _npy((1,), "|O", b"\0" * 8)}, "contains pickled Python objects"),
])
def test_npz_members_that_are_not_plain_arrays(tmp_path, members, why):
    assert why in _read_error(_zip(tmp_path / "a.npz", members))


def test_npz_still_reads_every_array_kind(tmp_path):
    """The hardened reader returns what np.load does: orders, 0-d, empty, endianness."""
    arrays = {"a": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "b": np.float32(3),
              "c": np.arange(5, dtype=">i4"), "e": np.zeros((0, 3)), "x/y": np.ones(2)}
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "a.npz", **arrays)
        read = npz.read_npz(tmp_path / "a.npz")
        assert sorted(read) == sorted(arrays)
        for key, want in arrays.items():
            assert read[key].dtype == want.dtype and read[key].flags.writeable
            np.testing.assert_array_equal(read[key], want)


def test_convert_cli_names_a_forged_npz_in_one_line(tmp_path, capsys):
    path = _zip(tmp_path / "a.npz", {"w.npy": _npy((10**6, 10**6), data=b"\0" * 16)})
    assert convert_cli.main([path, str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {path} is not a readable .npz file: member w.npy declares shape "
                   "(1000000, 1000000) of float32 (4000000000000 bytes) but holds 16 bytes "
                   "(truncated or forged).\n")


# ----------------------------------------------------------------- .safetensors / .pt
def _safetensors(header_len: int, header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", header_len) + header + data


_TENSOR = json.dumps({"a": {"dtype": "F32", "shape": [10**6, 10**6],
                            "data_offsets": [0, 4 * 10**12]}}).encode()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _forged_pt(path) -> None:
    """A genuine torch.save zip whose pickle declares a storage of 10^12 elements."""
    torch.save({"a": torch.ones(4)}, path)
    with zipfile.ZipFile(path) as z:
        contents = {n: z.read(n) for n in z.namelist()}

    class Forger(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, torch.UntypedStorage | torch.storage.TypedStorage):
                return ("storage", torch.FloatStorage, "0", "cpu", 10**12)
            return None

    forged = io.BytesIO()
    Forger(forged, protocol=2).dump({"a": torch.ones(4)})
    with zipfile.ZipFile(path, "w") as z:
        for name, data in contents.items():
            z.writestr(name, forged.getvalue() if name.endswith("data.pkl") else data)


def _forged_legacy_pt(path) -> None:
    """torch's pre-1.6 (non-zip) format, its storage's element count forged to 10^12."""
    f = io.BytesIO()
    torch.save({"a": torch.ones(4)}, f, _use_new_zipfile_serialization=False)
    data = f.getvalue()
    count = data.index(b"K\x04", data.index(b"cpu"))  # BININT1 4: the storage's numel
    path.write_bytes(data[:count] + b"\x8a\x08" + (10**12).to_bytes(8, "little")  # LONG1
                     + data[count + 2:])


@pytest.mark.parametrize("name, make, why", [
    ("len.safetensors", lambda p: _safetensors(2**62, b"{}"), "header too large"),
    ("past.safetensors", lambda p: _safetensors(1000, b'{"a": 1}'), "invalid header length"),
    ("offsets.safetensors", lambda p: _safetensors(len(_TENSOR), _TENSOR, b"\0" * 16),
     "incomplete metadata, file not fully covered"),
    ("empty.safetensors", lambda p: b"", "header too small"),
    ("evil.pt", lambda p: pickle.dumps({"a": _Evil(p)}), "it holds pickled objects or is corrupt"),
    ("forged.pt", _forged_pt, "record size (16 bytes) does not match expected size"),
    ("legacy.pt", _forged_legacy_pt, "can't allocate memory: you tried to allocate "
     "4000000000000 bytes"),
])
def test_convert_cli_refuses_hostile_state_dicts(tmp_path, capsys, name, make, why):
    path = tmp_path / name
    marker = tmp_path / "pwned"
    if make in (_forged_pt, _forged_legacy_pt):
        make(path)
    else:
        path.write_bytes(make(str(marker)))
    start = time.perf_counter()
    code = convert_cli.main([str(path), str(tmp_path / "o.npz"), "--variant", "testing"])
    assert time.perf_counter() - start < 2.0
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {path} ") and why in err, err
    assert err.count("\n") == 1 and not marker.exists()


# ------------------------------------------------------------- Hugging Face directories
@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A genuine HF directory of the testing variant, written by the converter."""
    root = tmp_path_factory.mktemp("hf")
    with torch.device("meta"):
        shapes = create_model("testing", num_classes=5, img_size=32).state_dict()
    sd = {k: torch.zeros(v.shape) for k, v in shapes.items()}
    npz.write_npz(root / "a.npz", convert.state_dict_to_npz(sd, num_heads=4))
    files.convert_file(root / "a.npz", root / "hf")
    return root / "hf"


def _config_error(hf_dir, tmp_path, capsys, edit) -> str:
    directory = tmp_path / "hf"
    shutil.copytree(hf_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    text = edit(config)
    (directory / "config.json").write_text(text if isinstance(text, str) else json.dumps(config))
    assert convert_cli.main([str(directory), str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err[len("error: "):-1]


def test_hf_directory_converts_before_it_is_broken(hf_dir, tmp_path):
    files.convert_file(hf_dir, tmp_path / "o.npz")  # the fixture is valid: the edits break it


def test_hf_config_that_is_not_json(hf_dir, tmp_path, capsys):
    message = _config_error(hf_dir, tmp_path, capsys, lambda c: '{"model_type": "vit",')
    assert message.startswith(f"{tmp_path}/hf/config.json is not valid JSON: ")


def test_hf_config_that_is_a_json_list(hf_dir, tmp_path, capsys):
    assert _config_error(hf_dir, tmp_path, capsys, lambda c: "[1, 2]") == (
        f"{tmp_path}/hf/config.json holds a JSON list, not an object.")


def test_hf_config_declaring_an_absurd_width(hf_dir, tmp_path, capsys):
    assert _config_error(hf_dir, tmp_path, capsys, lambda c: c.update(hidden_size=10**9)) == (
        "config.json says hidden_size=1000000000 but the weights have 32.")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.__delitem__("model_type"),
     "config.json has model_type None; only Hugging Face ViT"),
    (lambda c: c.update(num_attention_heads=10**9),
     "config.json has num_attention_heads=1000000000; expected a whole number from 1 to 4096."),
    (lambda c: c.update(num_attention_heads="four"),
     "config.json has num_attention_heads='four'; expected a whole number from 1 to 4096."),
    (lambda c: c.update(layer_norm_eps=None),
     "config.json has layer_norm_eps=None; expected a small positive number (e.g. 1e-12)."),
    (lambda c: c.update(id2label=["cat"]),
     "config.json's id2label is a list, not an object {index: class name}."),
    (lambda c: c.update(image_size=[[1], [2]]),
     "config.json says image_size=[[1], [2]] but the weights have 32."),
])
def test_hf_config_with_missing_or_wrong_fields(hf_dir, tmp_path, capsys, edit, message):
    assert _config_error(hf_dir, tmp_path, capsys, edit).startswith(message)


def test_hf_config_too_large_to_be_one(hf_dir, tmp_path, capsys):
    message = _config_error(hf_dir, tmp_path, capsys,
                            lambda c: " " * (files.MAX_JSON_BYTES + 1) + "{}")
    assert message == (f"{tmp_path}/hf/config.json is {files.MAX_JSON_BYTES + 3} bytes, not a "
                       "Hugging Face JSON file (those are under 16 MiB).")


@pytest.mark.parametrize("index", ["{", '{"weight_map": 3}',
                                   '{"weight_map": {"a": "../../etc/passwd"}}'])
def test_hf_shard_index_that_is_broken_or_points_elsewhere(hf_dir, tmp_path, capsys, index):
    directory = tmp_path / "hf"
    shutil.copytree(hf_dir, directory)
    os.remove(directory / files.HF_WEIGHTS)
    (directory / (files.HF_WEIGHTS + ".index.json")).write_text(index)
    assert convert_cli.main([str(directory), str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {directory}/model.safetensors.index.json ")
    assert err.count("\n") == 1


# ------------------------------------------------------------- the same files in vit_jax
@pytest.fixture(scope="module")
def vit_jax_tools():
    """vit_jax's predict command and training library: importing them (JAX, Flax, tfds)
    takes ~15 s here, once; the tests themselves take milliseconds."""
    from vit_jax import predict
    from vit_jax.training import trainer

    return predict, trainer


def test_vit_jax_predict_and_init_checkpoint_refuse_a_forged_npz(tmp_path, capsys,
                                                                 vit_jax_tools):
    from PIL import Image

    from conftest import tiny_digits_config

    predict, trainer = vit_jax_tools
    path = _zip(tmp_path / "a.npz", {"w.npy": _npy((10**6, 10**6), data=b"\0" * 16)})
    why = (f"{path} is not a readable .npz file: member w.npy declares shape (1000000, 1000000) "
           "of float32 (4000000000000 bytes) but holds 16 bytes (truncated or forged).")
    image = str(tmp_path / "x.png")
    Image.new("RGB", (8, 8)).save(image)
    with pytest.raises(SystemExit) as e:
        predict.main(["--checkpoint", path, image])
    assert e.value.code == 2 and capsys.readouterr().err == f"error: {why}\n"
    config = tiny_digits_config(None, init_checkpoint=path)
    with pytest.raises(errors.CheckpointError) as e:
        trainer.use_init_checkpoint_options(config)  # what training reads first
    assert str(e.value) == why


def test_workdir_config_that_is_not_json(tmp_path, vit_jax_tools):
    """A workdir whose config.json is broken: one WorkdirError (a UserError), no traceback."""
    from vit_jax.training import state
    from vit_jax.weights import loading

    (tmp_path / "config.json").write_text('{"model": ')
    with pytest.raises(errors.WorkdirError, match=r"config\.json is not a readable vit_jax "
                                                  r"config\.json: "):
        loading.load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(errors.WorkdirError, match="holds a JSON list, not a config object"):
        state.read_workdir_config(str(tmp_path / "config.json"))
