"""Models, weights and inputs of the parity proof, and the trips through the `.npz` file.

Builds a `parity.cases.Case` in both frameworks with identical random weights (the
models' own initialisers plus noise on the constant leaves, see `randomise`), makes the
random images, and moves weights Flax → `.npz` → torch and back, always through the
files the two packages write (`checkpoint.save_npz` / `vit_torch.convert.save_npz`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from parity.cases import Case
from vit_core import layouts
from vit_jax.model import vit as models
from vit_jax.weights import checkpoint
from vit_torch import convert
from vit_torch import model as torch_vit

Flat = dict[str, np.ndarray]
Params = dict[str, Any]  # a nested Flax parameter tree


# ------------------------------------------------------------------------ inputs, weights
def random_images(case: Case, seed: int, size: int | None = None) -> np.ndarray:
    """(B, H, H, 3) float32 images uniform in [-1, 1] (the input pipeline's range)."""
    size = size or case.image_size
    rng = np.random.default_rng(1000 + seed)
    return rng.uniform(-1.0, 1.0, (case.batch, size, size, 3)).astype(np.float32)


def randomise(flat: Mapping[str, np.ndarray], seed: int, scale: float = 0.1) -> Flat:
    """Adds N(0, scale²) noise to every constant or near-zero leaf, keeps the others.

    The official initialisers leave the head, the class token and most biases at zero,
    LayerNorm scales at one and MLP biases at 1e-6: with them a wrong transpose of the
    head or a swapped q/k bias would not change the logits. 0.1 is the size trained
    biases have, and a 0.1-std head on unit-norm features gives logits of order one.

    Args:
      flat: name → array (npz keys or torch state-dict keys).
      seed: noise seed.
      scale: standard deviation of the noise.

    Returns:
      A new dict; the randomly initialised leaves (kernels, posemb) are unchanged.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for key in sorted(flat):
        a = np.asarray(flat[key])
        if a.std() < 1e-4:  # zeros, ones, the 1e-6 MLP biases
            a = (a + scale * rng.standard_normal(a.shape)).astype(a.dtype)
        out[key] = a
    return out


def flax_model(case: Case, dtype: Any = jnp.float32) -> models.VisionTransformer:
    """The case's Flax module (float32 parameters, `dtype` compute)."""
    return models.VisionTransformer(case.spec, scan=case.scan, dtype=dtype)


def torch_model(case: Case, image_size: int | None = None, *, empty: bool = False
                ) -> torch_vit.VisionTransformer:
    """The case's torch module (eval mode), its position embedding sized for `image_size`.

    Args:
      case: the configuration.
      image_size: defaults to the case's.
      empty: skip initialisation (built on the meta device, then given uninitialised
        memory): for a model whose every weight is loaded next, ~2 s less on a B/16, and a
        weight the loader forgot would hold garbage, not plausible init values.
    """
    with torch.device("meta" if empty else "cpu"):
        spec = case.spec.replace(image_size=image_size or case.image_size)
        model = torch_vit.VisionTransformer(spec)
    return (model.to_empty(device="cpu") if empty else model).eval()


@functools.cache
def param_shapes(case: Case, image_size: int) -> Params:
    """The Flax parameter tree's shapes (`jax.ShapeDtypeStruct`s), traced once per case."""
    return models.param_shapes(flax_model(case), image_size)


def init_flax(case: Case, seed: int) -> Params:
    """Flax parameters from the model's own initialisers, then `randomise`d.

    Cases that differ only in options without parameters (GELU, scan) get the same
    weights, initialised once (`_init_flat`).
    """
    shape_key = dataclasses.replace(
        case, name="", scan=False, train=False,
        options=tuple(kv for kv in case.options if kv[0] != "gelu_approximate"))
    return checkpoint.npz_dict_to_params(_init_flat(shape_key, seed), scan=case.scan)


@functools.lru_cache(maxsize=16)  # at most ~1.5 GB: the real variants' are 22-350 MB
def _init_flat(case: Case, seed: int) -> Flat:
    """`init_flax`'s weights in npz layout (shared, read-only: callers never write them).

    Initialised as a `scan=True` model and unstacked: the same initialisers and scales,
    but XLA compiles one block's initialisers instead of twelve (~2 s instead of ~7 s).
    """
    model = flax_model(dataclasses.replace(case, scan=True))
    images = jnp.zeros((1, case.image_size, case.image_size, 3), jnp.float32)
    # Jitted so that XLA drops the forward pass `init` runs: only the initialisers remain.
    params = jax.jit(lambda key: model.init(key, images)["params"])(jax.random.key(seed))
    flat = randomise(checkpoint.params_to_npz_dict(params), seed)
    for a in flat.values():
        a.flags.writeable = False
    return flat


def init_torch(case: Case, seed: int) -> torch_vit.VisionTransformer:
    """A torch model from its own (official-scale) initialisers, then `randomise`d."""
    torch.manual_seed(seed)
    model = torch_model(case)
    noisy = randomise({k: v.numpy() for k, v in model.state_dict().items()}, seed)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in noisy.items()})
    return model


# ---------------------------------------------------------------- through the npz file
def flax_to_torch(
    case: Case, params: Params, image_size: int | None = None
) -> torch_vit.VisionTransformer:
    """Flax params → `checkpoint.save_npz` → `.npz` file → `vit_torch.convert.load_npz`.

    Args:
      case: the configuration.
      params: the Flax tree.
      image_size: build the torch model for this size; the file's position embedding is
        then resized by `load_npz(..., resize=True)`.

    Returns:
      The torch model holding the file's weights.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "flax.npz")
        checkpoint.save_npz(path, params)
        model = torch_model(case, image_size, empty=True)
        return convert.load_npz(model, path, resize=image_size is not None)


def torch_to_flax(case: Case, model: torch_vit.VisionTransformer) -> Params:
    """torch model → `vit_torch.convert.save_npz` → `.npz` → `checkpoint.load_npz` (checked)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "torch.npz")
        convert.save_npz(model, path)
        params = checkpoint.load_npz(path, scan=case.scan)
    checkpoint.check_params(params, param_shapes(case, case.image_size))
    return params


def torch_to_npz(tensors: Mapping[str, torch.Tensor], model: torch_vit.VisionTransformer) -> Flat:
    """A state-dict-shaped mapping (weights or their gradients) → npz layout."""
    return layouts.timm_to_official(convert.to_numpy(tensors), model.spec)
