"""The `.npz` layout round trips bit-exactly: Flax → npz → Flax, torch → npz → torch, and
Flax → npz → torch → npz writes the very same arrays (every member's bytes: header with
dtype and shape, then data)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import chex
import numpy as np
import pytest
import torch

from parity import cases, weights
from vit_core import npz
from vit_jax.weights import checkpoint
from vit_torch import convert

# The small cases and one real variant: 12 blocks of real widths, 23 MB files.
CASES = [c for c in cases.CASES if c.variant == "testing"] + [cases.CASES_BY_NAME["Ti/16"]]


def _members(path: str | os.PathLike) -> list[tuple[str, bytes]]:
    """(name, .npy bytes) of every member in file order. Not the zip's own bytes: numpy
    stamps each member with the time of writing."""
    with zipfile.ZipFile(path) as z:
        return [(info.filename, z.read(info)) for info in z.infolist()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_flax_npz_flax(case: cases.Case, tmp_path: Path) -> None:
    params = weights.init_flax(case, 0)
    checkpoint.save_npz(tmp_path / "a.npz", params)
    loaded = checkpoint.load_npz(tmp_path / "a.npz", scan=case.scan)
    want = checkpoint.npz_dict_to_params(checkpoint.params_to_npz_dict(params), scan=case.scan)
    chex.assert_trees_all_equal(loaded, want, strict=True)  # values, dtypes and shapes


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_torch_npz_torch(case: cases.Case, tmp_path: Path) -> None:
    model = weights.init_torch(case, 1)
    convert.save_npz(model, tmp_path / "t.npz")
    empty = weights.torch_model(case, empty=True)
    loaded = convert.load_npz(empty, tmp_path / "t.npz").state_dict()
    want = model.state_dict()
    assert list(loaded) == list(want)
    for key, tensor in want.items():
        assert loaded[key].dtype == tensor.dtype, key
        assert torch.equal(loaded[key], tensor), key


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_flax_npz_torch_npz_identical(case: cases.Case, tmp_path: Path) -> None:
    params = weights.init_flax(case, 0)
    checkpoint.save_npz(tmp_path / "flax.npz", params)
    model = convert.load_npz(weights.torch_model(case, empty=True), tmp_path / "flax.npz")
    convert.save_npz(model, tmp_path / "torch.npz")
    flax_file, torch_file = _members(tmp_path / "flax.npz"), _members(tmp_path / "torch.npz")
    assert [n for n, _ in torch_file] == [n for n, _ in flax_file]
    for (name, want), (_, got) in zip(flax_file, torch_file, strict=True):
        assert got == want, f"{name}: the torch-written member differs from the Flax-written one"
    # The file also holds exactly the Flax tree's arrays (not only equal to itself).
    flat = npz.read_npz(tmp_path / "torch.npz")
    chex.assert_trees_all_equal(flat, {k: np.asarray(v) for k, v in
                                       checkpoint.params_to_npz_dict(params).items()}, strict=True)
