"""The one name map between `vit_torch` state dicts and the official `.npz` layout.

The released checkpoints of google-research/vision_transformer (flat `.npz`, Flax paths
joined with "/") are the interchange format. `key_map` below lists every key pair and
its transform; both directions are pure reshapes, transposes and concatenations, so round
trips are bit-exact and keep the dtype. Every key and shape is asserted: a missing, extra
or mis-shaped key is an error naming it, never a silent skip.

CLI: `python -m vit_torch.convert IN OUT [--variant B/16]` (see `--help`; code in
`vit_torch/__main__.py`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping

import numpy as np
import torch

from vit_jax.checkpoint import CheckpointError, read_npz, resize_posemb, write_npz
from vit_torch.model import VisionTransformer

__all__ = ["CheckpointError", "load_npz", "npz_to_state_dict", "save_npz", "state_dict_to_npz"]

_ATTN = "MultiHeadDotProductAttention_1"
_MAP = "MAPHead_0/"  # big_vision's attention-pooling head (classifier="map")
_POSEMB = "Transformer/posembed_input/pos_embedding"
_BLOCK = re.compile(r"^(?:Transformer/encoderblock_|blocks\.)(\d+)[/.]")


@dataclasses.dataclass(frozen=True)
class Dims:
    """Sizes that fix every key's shape: P, C, D, K, Dh, MLP, layers, tokens, head."""

    patch: int
    channels: int
    width: int
    heads: int
    head_dim: int
    mlp: int
    layers: int
    tokens: int | None  # learned posemb tokens; None: posemb="sincos2d" (no parameter)
    cls: bool
    map_head: bool  # classifier="map": MAPHead_0 ⇄ attn_pool
    rep: int | None  # pre-logits width, None without the layer
    classes: int | None  # None without a head


# Every transform: (npz arrays → torch array, (torch array, dims) → npz arrays). The npz
# side is a tuple: one key, or q/k/v. Pure transposes/reshapes/concats, hence bit-exact.
_TRANSFORMS: dict[str, tuple[Callable, Callable]] = {
    "copy": (lambda a: a[0], lambda t, d: (t,)),
    # conv kernel (P, P, C, D) HWIO ⇄ weight (D, C, P, P) OIHW
    "conv": (lambda a: a[0].transpose(3, 2, 0, 1), lambda t, d: (t.transpose(2, 3, 1, 0),)),
    # dense kernel (in, out) ⇄ weight (out, in)
    "dense": (lambda a: a[0].T, lambda t, d: (t.T,)),
    # n of the query/key/value kernels, n × (D, K, Dh) ⇄ fused weight (nD, D): qkv (n=3),
    # the MAP head's kv (2) and q (1)
    "qkv": (
        lambda a: np.concatenate([k.reshape(k.shape[0], -1).T for k in a]),
        lambda t, d: tuple(w.T.reshape(d.width, d.heads, d.head_dim)
                           for w in np.split(t, len(t) // d.width)),
    ),
    # n of the query/key/value biases, n × (K, Dh) ⇄ fused bias (nD,)
    "qkv_bias": (
        lambda a: np.concatenate([b.reshape(-1) for b in a]),
        lambda t, d: tuple(b.reshape(d.heads, d.head_dim) for b in np.split(t, len(t) // d.width)),
    ),
    # out kernel (K, Dh, D) ⇄ proj weight (D, D): flatten the (K, Dh) input axes, transpose
    "out": (
        lambda a: a[0].reshape(-1, a[0].shape[-1]).T,
        lambda t, d: (t.T.reshape(d.heads, d.head_dim, d.width),),
    ),
}


@dataclasses.dataclass(frozen=True)
class Pair:
    """One torch key ⇄ one or more npz keys, with both shapes and the transform's name."""

    torch_key: str
    torch_shape: tuple[int, ...]
    npz_keys: tuple[str, ...]
    npz_shape: tuple[int, ...]  # of each npz key
    transform: str


def key_map(dims: Dims) -> list[Pair]:
    """THE name map: every (torch key, npz keys, shapes, transform) of a model of `dims`.

    Args:
      dims: the model's sizes.

    Returns:
      One `Pair` per torch parameter, in state-dict order.
    """
    P, C, D, K, Dh, M = dims.patch, dims.channels, dims.width, dims.heads, dims.head_dim, dims.mlp
    pairs = [Pair("cls_token", (1, 1, D), ("cls",), (1, 1, D), "copy")] if dims.cls else []
    if dims.tokens is not None:
        pos = (1, dims.tokens, D)
        pairs += [Pair("pos_embed", pos, (_POSEMB,), pos, "copy")]
    pairs += [
        Pair("patch_embed.proj.weight", (D, C, P, P), ("embedding/kernel",), (P, P, C, D), "conv"),
        Pair("patch_embed.proj.bias", (D,), ("embedding/bias",), (D,), "copy"),
    ]
    for i in range(dims.layers):
        t, n = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        qkv = tuple(f"{n}{_ATTN}/{x}/" for x in ("query", "key", "value"))
        pairs += [
            Pair(t + "norm1.weight", (D,), (n + "LayerNorm_0/scale",), (D,), "copy"),
            Pair(t + "norm1.bias", (D,), (n + "LayerNorm_0/bias",), (D,), "copy"),
            Pair(t + "attn.qkv.weight", (3 * D, D), tuple(q + "kernel" for q in qkv), (D, K, Dh),
                 "qkv"),
            Pair(t + "attn.qkv.bias", (3 * D,), tuple(q + "bias" for q in qkv), (K, Dh),
                 "qkv_bias"),
            Pair(t + "attn.proj.weight", (D, D), (f"{n}{_ATTN}/out/kernel",), (K, Dh, D), "out"),
            Pair(t + "attn.proj.bias", (D,), (f"{n}{_ATTN}/out/bias",), (D,), "copy"),
            Pair(t + "norm2.weight", (D,), (n + "LayerNorm_2/scale",), (D,), "copy"),
            Pair(t + "norm2.bias", (D,), (n + "LayerNorm_2/bias",), (D,), "copy"),
            Pair(t + "mlp.fc1.weight", (M, D), (n + "MlpBlock_3/Dense_0/kernel",), (D, M), "dense"),
            Pair(t + "mlp.fc1.bias", (M,), (n + "MlpBlock_3/Dense_0/bias",), (M,), "copy"),
            Pair(t + "mlp.fc2.weight", (D, M), (n + "MlpBlock_3/Dense_1/kernel",), (M, D), "dense"),
            Pair(t + "mlp.fc2.bias", (D,), (n + "MlpBlock_3/Dense_1/bias",), (D,), "copy"),
        ]
    pairs += [
        Pair("norm.weight", (D,), ("Transformer/encoder_norm/scale",), (D,), "copy"),
        Pair("norm.bias", (D,), ("Transformer/encoder_norm/bias",), (D,), "copy"),
    ]
    if dims.map_head:
        pairs += map_head_pairs(dims)
    width = D
    if dims.rep is not None:
        R = width = dims.rep
        pairs += [
            Pair("pre_logits.fc.weight", (R, D), ("pre_logits/kernel",), (D, R), "dense"),
            Pair("pre_logits.fc.bias", (R,), ("pre_logits/bias",), (R,), "copy"),
        ]
    if dims.classes is not None:
        N = dims.classes
        pairs += [
            Pair("head.weight", (N, width), ("head/kernel",), (width, N), "dense"),
            Pair("head.bias", (N,), ("head/bias",), (N,), "copy"),
        ]
    return pairs


def map_head_pairs(dims: Dims) -> list[Pair]:
    """The MAP head's pairs: big_vision's `MAPHead_0` ⇄ timm's `AttentionPoolLatent` names.

    As timm's `_load_weights` maps SigLIP checkpoints: the probe is the latent query, the
    query kernel the `q` projection, key and value kernels the fused `kv` (key first).
    """
    D, K, Dh, M = dims.width, dims.heads, dims.head_dim, dims.mlp
    t, n = "attn_pool.", _MAP
    a = n + "MultiHeadDotProductAttention_0/"
    kv = (a + "key/", a + "value/")
    return [
        Pair(t + "latent", (1, 1, D), (n + "probe",), (1, 1, D), "copy"),
        Pair(t + "q.weight", (D, D), (a + "query/kernel",), (D, K, Dh), "qkv"),
        Pair(t + "q.bias", (D,), (a + "query/bias",), (K, Dh), "qkv_bias"),
        Pair(t + "kv.weight", (2 * D, D), tuple(x + "kernel" for x in kv), (D, K, Dh), "qkv"),
        Pair(t + "kv.bias", (2 * D,), tuple(x + "bias" for x in kv), (K, Dh), "qkv_bias"),
        Pair(t + "proj.weight", (D, D), (a + "out/kernel",), (K, Dh, D), "out"),
        Pair(t + "proj.bias", (D,), (a + "out/bias",), (D,), "copy"),
        Pair(t + "norm.weight", (D,), (n + "LayerNorm_0/scale",), (D,), "copy"),
        Pair(t + "norm.bias", (D,), (n + "LayerNorm_0/bias",), (D,), "copy"),
        Pair(t + "mlp.fc1.weight", (M, D), (n + "MlpBlock_0/Dense_0/kernel",), (D, M), "dense"),
        Pair(t + "mlp.fc1.bias", (M,), (n + "MlpBlock_0/Dense_0/bias",), (M,), "copy"),
        Pair(t + "mlp.fc2.weight", (D, M), (n + "MlpBlock_0/Dense_1/kernel",), (M, D), "dense"),
        Pair(t + "mlp.fc2.bias", (D,), (n + "MlpBlock_0/Dense_1/bias",), (D,), "copy"),
    ]


def _size(shapes: Mapping[str, tuple[int, ...]], candidates: list[tuple[str, int]]) -> int:
    """The first size found among (key, axis) candidates; a missing-key error otherwise."""
    for key, axis in candidates:
        if key in shapes and len(shapes[key]) > axis:
            return int(shapes[key][axis])
    raise CheckpointError(f"Checkpoint does not fit a ViT: missing key {candidates[0][0]}.")


def _num_layers(keys: list[str]) -> int:
    found = [int(m.group(1)) for m in map(_BLOCK.match, keys) if m]
    return max(found) + 1 if found else 0  # gaps show up as missing keys


def npz_dims(shapes: Mapping[str, tuple[int, ...]]) -> Dims:
    """Infers the model sizes from official-layout npz key shapes."""
    n, a = "Transformer/encoderblock_0/", f"Transformer/encoderblock_0/{_ATTN}/"
    return Dims(
        patch=_size(shapes, [("embedding/kernel", 0)]),
        channels=_size(shapes, [("embedding/kernel", 2)]),
        width=_size(shapes, [("embedding/kernel", 3), ("Transformer/encoder_norm/scale", 0)]),
        heads=_size(shapes, [(a + "query/kernel", 1), (a + "query/bias", 0),
                             (a + "out/kernel", 0)]),
        head_dim=_size(shapes, [(a + "query/kernel", 2), (a + "query/bias", 1),
                                (a + "out/kernel", 1)]),
        mlp=_size(shapes, [(n + "MlpBlock_3/Dense_0/kernel", 1),
                           (n + "MlpBlock_3/Dense_0/bias", 0)]),
        layers=_num_layers(list(shapes)),
        tokens=_size(shapes, [(_POSEMB, 1)]) if _POSEMB in shapes else None,
        cls="cls" in shapes,
        map_head=any(k.startswith(_MAP) for k in shapes),
        rep=_size(shapes, [("pre_logits/kernel", 1), ("pre_logits/bias", 0)])
        if any(k.startswith("pre_logits/") for k in shapes) else None,
        classes=_size(shapes, [("head/kernel", 1), ("head/bias", 0)])
        if any(k.startswith("head/") for k in shapes) else None,
    )


def torch_dims(shapes: Mapping[str, tuple[int, ...]], num_heads: int) -> Dims:
    """Infers the model sizes from state-dict shapes (the head count is not in them)."""
    width = _size(shapes, [("patch_embed.proj.weight", 0), ("norm.weight", 0)])
    if width % num_heads:
        raise CheckpointError(f"Width {width} is not divisible by num_heads={num_heads}.")
    return Dims(
        patch=_size(shapes, [("patch_embed.proj.weight", 2)]),
        channels=_size(shapes, [("patch_embed.proj.weight", 1)]),
        width=width, heads=num_heads, head_dim=width // num_heads,
        mlp=_size(shapes, [("blocks.0.mlp.fc1.weight", 0), ("blocks.0.mlp.fc1.bias", 0)]),
        layers=_num_layers(list(shapes)),
        tokens=_size(shapes, [("pos_embed", 1)]) if "pos_embed" in shapes else None,
        cls="cls_token" in shapes,
        map_head=any(k.startswith("attn_pool.") for k in shapes),
        rep=_size(shapes, [("pre_logits.fc.weight", 0), ("pre_logits.fc.bias", 0)])
        if any(k.startswith("pre_logits.") for k in shapes) else None,
        classes=_size(shapes, [("head.weight", 0), ("head.bias", 0)])
        if any(k.startswith("head.") for k in shapes) else None,
    )


def check_shapes(
    got: Mapping[str, tuple[int, ...]], want: Mapping[str, tuple[int, ...]], what: str,
    target: str = "the ViT layout",
) -> None:
    """Raises one `CheckpointError` naming every missing, extra or mis-shaped key.

    Args:
      got: key → shape of what was read; want: key → the shape `target` expects.
      what, target: names used in the message ("npz file", "this model", ...).
    """
    problems = [f"missing key {k} (expected shape {want[k]})" for k in want if k not in got]
    problems += [f"unexpected key {k} (shape {got[k]})" for k in got if k not in want]
    problems += [f"shape mismatch at {k}: {got[k]} in the {what}, {want[k]} in {target}"
                 for k in want if k in got and tuple(got[k]) != tuple(want[k])]
    if problems:
        raise CheckpointError(f"The {what} does not fit {target}:\n  " + "\n  ".join(problems))


def npz_to_state_dict(flat: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Official-layout arrays → a `vit_torch` state dict (bit-exact, dtype kept).

    Args:
      flat: "/"-joined keys to arrays, e.g. from `vit_jax.checkpoint.read_npz`.

    Returns:
      {timm-style key: tensor}; load it with `model.load_state_dict`.

    Raises:
      CheckpointError: a missing, extra or mis-shaped key (all named in one message).
    """
    shapes = {k: tuple(np.shape(v)) for k, v in flat.items()}
    pairs = key_map(npz_dims(shapes))
    check_shapes(shapes, {k: p.npz_shape for p in pairs for k in p.npz_keys}, "npz file")
    return {
        # A C-contiguous private copy: torch must own writable memory.
        p.torch_key: torch.from_numpy(np.array(
            _TRANSFORMS[p.transform][0](tuple(np.asarray(flat[k]) for k in p.npz_keys)), order="C"
        ))
        for p in pairs
    }


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
        t = t.float()
    return t.numpy()


def state_dict_to_npz(sd: Mapping[str, torch.Tensor], *, num_heads: int) -> dict[str, np.ndarray]:
    """A `vit_torch` state dict → official-layout arrays (bit-exact, dtype kept).

    Args:
      sd: `model.state_dict()` or a loaded `.pt`/`.safetensors` dict.
      num_heads: K, needed to split the fused (3D, D) qkv into (D, K, Dh) kernels.

    Returns:
      {"/"-joined key: array}, ready for `vit_jax.checkpoint.write_npz`.

    Raises:
      CheckpointError: a missing, extra or mis-shaped key (all named in one message).
    """
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    dims = torch_dims(shapes, num_heads)
    pairs = key_map(dims)
    check_shapes(shapes, {p.torch_key: p.torch_shape for p in pairs}, "state dict")
    out: dict[str, np.ndarray] = {}
    for p in pairs:
        parts = _TRANSFORMS[p.transform][1](_to_numpy(sd[p.torch_key]), dims)
        out.update({k: np.ascontiguousarray(a) for k, a in zip(p.npz_keys, parts, strict=True)})
    return out


def load_npz(
    model: VisionTransformer, path: str | os.PathLike, *, resize: bool = False
) -> VisionTransformer:
    """Loads an official `.npz` (e.g. a released `ViT-B_16.npz`) into `model`, in place.

    Args:
      model: a `VisionTransformer` of the checkpoint's architecture.
      path: the `.npz` file.
      resize: resample the position embedding to the model's patch grid
        (`vit_jax.checkpoint.resize_posemb`) when the file was made for another image size.

    Returns:
      The same model, for chaining.

    Raises:
      CheckpointError: unreadable file, or any key/shape that does not fit the model.
    """
    flat = read_npz(path)
    key = _POSEMB
    want = tuple(model.pos_embed.shape) if model.pos_embed is not None else None
    # Only a grid change is resizable; a class-token mismatch is left to the key check below,
    # and so is a learned posemb in the file for a sincos2d model (want None).
    same_prefix = ("cls" in flat) == (model.cls_token is not None)
    if key in flat and want is not None and flat[key].shape != want and same_prefix:
        if not resize:
            raise CheckpointError(
                f"{path}: the position embedding has shape {flat[key].shape} but the model "
                f"expects {want} (a {model.grid_size[0]}x{model.grid_size[1]} patch grid). "
                "Pass resize=True to resample it (vit_jax.checkpoint.resize_posemb)."
            )
        flat[key] = resize_posemb(flat[key], model.grid_size, model.num_prefix_tokens)
    sd = npz_to_state_dict(flat)
    model_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_shapes({k: tuple(v.shape) for k, v in sd.items()}, model_shapes, f"checkpoint {path}",
                 "this model")
    model.load_state_dict(sd, strict=True)
    return model


def save_npz(model: VisionTransformer, path: str | os.PathLike) -> None:
    """Saves `model` in the official `.npz` layout (atomic write).

    Args:
      model: the `VisionTransformer`.
      path: destination `.npz`.
    """
    write_npz(path, state_dict_to_npz(model.state_dict(), num_heads=model.num_heads))


if __name__ == "__main__":
    # The CLI lives in vit_torch/__main__.py (file formats, argparse); same entry point.
    from vit_torch.__main__ import main

    sys.exit(main())
