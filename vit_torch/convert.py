"""The one name map between the official `.npz` layout and the torch layouts (timm, HF).

The released checkpoints of google-research/vision_transformer (flat `.npz`, Flax paths
joined with "/") are the interchange format. `key_map` below lists, for every parameter,
its timm name (the `vit_torch` state dict), its Hugging Face `ViTModel` /
`ViTForImageClassification` name(s) and its npz key(s), with the shapes and the transform
between them. All transforms are pure reshapes, transposes and concatenations, so round
trips are bit-exact and keep the dtype. Every key and shape is asserted: a missing, extra
or mis-shaped key is an error naming it, never a silent skip.

Files (`.pt`, `.safetensors`, HF directories) are read and written by `vit_torch.files`;
the CLI is `python -m vit_torch IN OUT`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping

import numpy as np
import torch

from vit_core.errors import CheckpointError, ConfigError
from vit_core.npz import read_npz, write_npz
from vit_core.posemb import resize_posemb
from vit_core.variants import VARIANTS, decode_variant
from vit_torch.model import VisionTransformer

_ATTN = "MultiHeadDotProductAttention_1"
_MAP = "MAPHead_0/"  # big_vision's attention-pooling head (classifier="map")
_POSEMB = "Transformer/posembed_input/pos_embedding"
# Block index of an npz, timm or HF key.
_BLOCK = re.compile(r"^(?:Transformer/encoderblock_|blocks\.|(?:vit\.)?encoder\.layer\.)(\d+)[/.]")


@dataclasses.dataclass(frozen=True)
class Dims:
    """Sizes that fix every key's shape: P, C, D, K, Dh, MLP, layers, tokens, head."""

    patch: int
    channels: int
    width: int
    heads: int | None  # None: not known (a state dict does not store it)
    head_dim: int | None
    mlp: int
    layers: int
    tokens: int | None  # learned posemb tokens; None: posemb="sincos2d" (no parameter)
    cls: bool
    map_head: bool  # classifier="map": MAPHead_0 ⇄ attn_pool
    rep: int | None  # pre-logits width, None without the layer
    classes: int | None  # None without a head


# Every transform: (npz arrays → torch array, (torch array, dims) → npz arrays). The npz
# side is a tuple: one key, or q/k/v. Pure transposes/reshapes/concats, hence bit-exact.
# The HF side needs none: its weights are timm's, with q/k/v as three (D, D) rows blocks
# of timm's fused (3D, D) qkv (split/concatenated on axis 0 in `hf_to_npz`/`npz_to_hf`).
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
    """One parameter: its torch (timm) key, HF key(s) and npz key(s), shapes, transform.

    `hf_keys` are relative to HF's `ViTModel` (add "vit." inside a
    `ViTForImageClassification`, except for "classifier.*"); three keys for q/k/v, each
    a third of the torch tensor along axis 0, otherwise one key of the torch shape.
    """

    torch_key: str
    torch_shape: tuple[int, ...]
    npz_keys: tuple[str, ...]
    npz_shape: tuple[int, ...]  # of each npz key
    transform: str
    hf_keys: tuple[str, ...] = ()  # none: no HF equivalent (the MAP head)


def key_map(dims: Dims) -> list[Pair]:
    """THE name map: every (torch key, npz keys, HF keys, shapes, transform) of `dims`.

    Args:
      dims: the model's sizes (with a known head count).

    Returns:
      One `Pair` per torch parameter, in state-dict order.
    """
    assert dims.heads is not None and dims.head_dim is not None, "key_map needs the heads"
    P, C, D, K, Dh, M = dims.patch, dims.channels, dims.width, dims.heads, dims.head_dim, dims.mlp
    e = "embeddings."
    pairs = [Pair("cls_token", (1, 1, D), ("cls",), (1, 1, D), "copy", (e + "cls_token",))
             ] if dims.cls else []
    if dims.tokens is not None:  # None: a fixed sin-cos posemb (no parameter)
        pos = (1, dims.tokens, D)
        pairs += [Pair("pos_embed", pos, (_POSEMB,), pos, "copy", (e + "position_embeddings",))]
    pairs += [
        Pair("patch_embed.proj.weight", (D, C, P, P), ("embedding/kernel",), (P, P, C, D), "conv",
             (e + "patch_embeddings.projection.weight",)),
        Pair("patch_embed.proj.bias", (D,), ("embedding/bias",), (D,), "copy",
             (e + "patch_embeddings.projection.bias",)),
    ]
    for i in range(dims.layers):
        t, n, h = f"blocks.{i}.", f"Transformer/encoderblock_{i}/", f"encoder.layer.{i}."
        qkv = tuple(f"{n}{_ATTN}/{x}/" for x in ("query", "key", "value"))
        hqkv = tuple(f"{h}attention.attention.{x}." for x in ("query", "key", "value"))
        pairs += [
            Pair(t + "norm1.weight", (D,), (n + "LayerNorm_0/scale",), (D,), "copy",
                 (h + "layernorm_before.weight",)),
            Pair(t + "norm1.bias", (D,), (n + "LayerNorm_0/bias",), (D,), "copy",
                 (h + "layernorm_before.bias",)),
            Pair(t + "attn.qkv.weight", (3 * D, D), tuple(q + "kernel" for q in qkv), (D, K, Dh),
                 "qkv", tuple(q + "weight" for q in hqkv)),
            Pair(t + "attn.qkv.bias", (3 * D,), tuple(q + "bias" for q in qkv), (K, Dh),
                 "qkv_bias", tuple(q + "bias" for q in hqkv)),
            Pair(t + "attn.proj.weight", (D, D), (f"{n}{_ATTN}/out/kernel",), (K, Dh, D), "out",
                 (h + "attention.output.dense.weight",)),
            Pair(t + "attn.proj.bias", (D,), (f"{n}{_ATTN}/out/bias",), (D,), "copy",
                 (h + "attention.output.dense.bias",)),
            Pair(t + "norm2.weight", (D,), (n + "LayerNorm_2/scale",), (D,), "copy",
                 (h + "layernorm_after.weight",)),
            Pair(t + "norm2.bias", (D,), (n + "LayerNorm_2/bias",), (D,), "copy",
                 (h + "layernorm_after.bias",)),
            Pair(t + "mlp.fc1.weight", (M, D), (n + "MlpBlock_3/Dense_0/kernel",), (D, M), "dense",
                 (h + "intermediate.dense.weight",)),
            Pair(t + "mlp.fc1.bias", (M,), (n + "MlpBlock_3/Dense_0/bias",), (M,), "copy",
                 (h + "intermediate.dense.bias",)),
            Pair(t + "mlp.fc2.weight", (D, M), (n + "MlpBlock_3/Dense_1/kernel",), (M, D), "dense",
                 (h + "output.dense.weight",)),
            Pair(t + "mlp.fc2.bias", (D,), (n + "MlpBlock_3/Dense_1/bias",), (D,), "copy",
                 (h + "output.dense.bias",)),
        ]
    pairs += [
        Pair("norm.weight", (D,), ("Transformer/encoder_norm/scale",), (D,), "copy",
             ("layernorm.weight",)),
        Pair("norm.bias", (D,), ("Transformer/encoder_norm/bias",), (D,), "copy",
             ("layernorm.bias",)),
    ]
    if dims.map_head:
        pairs += map_head_pairs(dims)
    width = D
    if dims.rep is not None:  # HF: the pooler of a ViTModel (dense + tanh on the class token)
        R = width = dims.rep
        pairs += [
            Pair("pre_logits.fc.weight", (R, D), ("pre_logits/kernel",), (D, R), "dense",
                 ("pooler.dense.weight",)),
            Pair("pre_logits.fc.bias", (R,), ("pre_logits/bias",), (R,), "copy",
                 ("pooler.dense.bias",)),
        ]
    if dims.classes is not None:
        N = dims.classes
        pairs += [
            Pair("head.weight", (N, width), ("head/kernel",), (width, N), "dense",
                 ("classifier.weight",)),
            Pair("head.bias", (N,), ("head/bias",), (N,), "copy", ("classifier.bias",)),
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


def _optional_size(shapes: Mapping[str, tuple[int, ...]], prefix: str,
                   candidates: list[tuple[str, int]]) -> int | None:
    """`_size` if any key starts with `prefix` (an optional layer), None otherwise."""
    return _size(shapes, candidates) if any(k.startswith(prefix) for k in shapes) else None


def _num_layers(keys: list[str]) -> int:
    found = [int(m.group(1)) for m in map(_BLOCK.match, keys) if m]
    return max(found) + 1 if found else 0  # gaps show up as missing keys


def _head_dim(width: int, num_heads: int | None) -> int | None:
    if num_heads is not None and (num_heads <= 0 or width % num_heads):
        raise CheckpointError(f"Width {width} is not divisible by num_heads={num_heads}.")
    return None if num_heads is None else width // num_heads


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
        rep=_optional_size(shapes, "pre_logits/", [("pre_logits/kernel", 1),
                                                   ("pre_logits/bias", 0)]),
        classes=_optional_size(shapes, "head/", [("head/kernel", 1), ("head/bias", 0)]),
    )


def torch_dims(shapes: Mapping[str, tuple[int, ...]], num_heads: int | None) -> Dims:
    """Infers the model sizes from timm/vit_torch state-dict shapes.

    Args:
      shapes: key → shape.
      num_heads: K, which a state dict does not store; None leaves it unknown.
    """
    width = _size(shapes, [("patch_embed.proj.weight", 0), ("norm.weight", 0)])
    return Dims(
        patch=_size(shapes, [("patch_embed.proj.weight", 2)]),
        channels=_size(shapes, [("patch_embed.proj.weight", 1)]),
        width=width, heads=num_heads, head_dim=_head_dim(width, num_heads),
        mlp=_size(shapes, [("blocks.0.mlp.fc1.weight", 0), ("blocks.0.mlp.fc1.bias", 0)]),
        layers=_num_layers(list(shapes)),
        tokens=_size(shapes, [("pos_embed", 1)]) if "pos_embed" in shapes else None,
        cls="cls_token" in shapes,
        map_head=any(k.startswith("attn_pool.") for k in shapes),
        rep=_optional_size(shapes, "pre_logits.", [("pre_logits.fc.weight", 0),
                                                   ("pre_logits.fc.bias", 0)]),
        classes=_optional_size(shapes, "head.", [("head.weight", 0), ("head.bias", 0)]),
    )


def hf_prefix(shapes: Mapping[str, object]) -> str:
    """"vit." for a `ViTForImageClassification` state dict, "" for a `ViTModel` one."""
    return "vit." if any(k.startswith("vit.") for k in shapes) else ""


def hf_dims(shapes: Mapping[str, tuple[int, ...]], num_heads: int) -> Dims:
    """Infers the model sizes from HF `ViTModel`/`ViTForImageClassification` shapes.

    Args:
      shapes: key → shape (either architecture's names).
      num_heads: `num_attention_heads` of the HF config.
    """
    p = hf_prefix(shapes)
    proj, fc1 = p + "embeddings.patch_embeddings.projection.weight", p + "encoder.layer.0."
    width = _size(shapes, [(proj, 0), (p + "layernorm.weight", 0)])
    return Dims(
        patch=_size(shapes, [(proj, 2)]), channels=_size(shapes, [(proj, 1)]),
        width=width, heads=num_heads, head_dim=_head_dim(width, num_heads),
        mlp=_size(shapes, [(fc1 + "intermediate.dense.weight", 0)]),
        layers=_num_layers(list(shapes)),
        tokens=_size(shapes, [(p + "embeddings.position_embeddings", 1)]),
        cls=True,  # HF's ViT always has one; a missing one is a missing-key error
        map_head=False,  # HF's ViT has no attention-pooling head
        rep=_optional_size(shapes, p + "pooler.", [(p + "pooler.dense.weight", 0),
                                                   (p + "pooler.dense.bias", 0)]),
        classes=_optional_size(shapes, "classifier.", [("classifier.weight", 0),
                                                       ("classifier.bias", 0)]),
    )


def check_shapes(
    got: Mapping[str, tuple[int, ...]], want: Mapping[str, tuple[int, ...]], what: str,
    target: str = "the ViT layout",
) -> None:
    """Raises one one-line `CheckpointError` naming missing, extra or mis-shaped keys.

    Args:
      got: key → shape of what was read; want: key → the shape `target` expects.
      what, target: names used in the message ("npz file", "this model", ...).
    """
    problems = [f"missing key {k} (expected shape {want[k]})" for k in want if k not in got]
    problems += [f"unexpected key {k} (shape {got[k]})" for k in got if k not in want]
    problems += [f"shape mismatch at {k}: {got[k]} in the {what}, {want[k]} in {target}"
                 for k in want if k in got and tuple(got[k]) != tuple(want[k])]
    if problems:
        more = f"; and {len(problems) - 6} more" if len(problems) > 6 else ""
        raise CheckpointError(f"The {what} does not fit {target}: " + "; ".join(problems[:6])
                              + more + ".")


# timm VisionTransformer options that the official layout cannot express, by key pattern.
_TIMM_REFUSED = (
    (r"^fc_norm\.", "timm's fc_norm (a LayerNorm after average pooling; the official 'gap' "
     "model normalises before pooling: build timm with fc_norm=False)"),
    (r"^norm_pre\.", "timm's norm_pre (a LayerNorm before the blocks, pre_norm=True)"),
    (r"^reg_token$", "timm's register tokens (reg_tokens > 0)"),
    (r"\.ls[12]\.", "timm's LayerScale (init_values)"),
    (r"\.attn\.[qk]_norm\.", "timm's q/k normalisation (qk_norm=True)"),
    (r"\.(attn|mlp)\.norm\.", "timm's extra attention/MLP norm (scale_attn/mlp_norm)"),
    (r"^patch_embed\.norm\.", "timm's patch-embedding norm"),
)


def timm_to_state_dict(
    sd: Mapping[str, torch.Tensor], *, no_embed_class: bool = False
) -> dict[str, torch.Tensor]:
    """A timm `VisionTransformer` state dict → the `vit_torch` one (mostly the same names).

    What maps: timm's default layout; `class_token=False, global_pool='avg',
    fc_norm=False` (the official "gap"); and, when told, `no_embed_class=True`. The rest
    is refused (`_TIMM_REFUSED`).

    Args:
      sd: the timm state dict.
      no_embed_class: the model was built with timm's `no_embed_class=True` (the class
        token gets no position embedding). A state dict cannot tell (its pos_embed is one
        row short, like a grid of another shape), so it must be said; a zero row is then
        prepended, which adds exactly nothing to the class token.

    Returns:
      The state dict in `vit_torch`'s layout.

    Raises:
      CheckpointError: a timm option without a counterpart; the message names its key.
    """
    for key in sd:
        for pattern, what in _TIMM_REFUSED:
            if re.search(pattern, key):
                raise CheckpointError(f"Cannot convert key {key}: {what} has no counterpart "
                                      "in the official ViT layout.")
    if not no_embed_class:
        return dict(sd)
    if "cls_token" not in sd or "pos_embed" not in sd:
        raise CheckpointError("no_embed_class needs a state dict with cls_token and pos_embed.")
    pos = sd["pos_embed"]  # (1, N, D) without the class token's row
    return {**sd, "pos_embed": torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1)}


def npz_to_state_dict(flat: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Official-layout arrays → a `vit_torch` (timm-named) state dict, bit-exact.

    Args:
      flat: "/"-joined keys to arrays, e.g. from `vit_jax.npz.read_npz`.

    Returns:
      {timm-style key: tensor}; load it with `model.load_state_dict`.

    Raises:
      CheckpointError: a missing, extra or mis-shaped key (named in the message).
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


def state_dict_to_npz(
    sd: Mapping[str, torch.Tensor], *, num_heads: int, no_embed_class: bool = False
) -> dict[str, np.ndarray]:
    """A `vit_torch` or timm state dict → official-layout arrays (bit-exact, dtype kept).

    Args:
      sd: `model.state_dict()` or a loaded `.pt`/`.safetensors` dict (timm's extras are
        mapped or refused by `timm_to_state_dict`).
      num_heads: K, needed to split the fused (3D, D) qkv into (D, K, Dh) kernels.
      no_embed_class: a timm `no_embed_class=True` model (see `timm_to_state_dict`).

    Returns:
      {"/"-joined key: array}, ready for `vit_jax.npz.write_npz`.

    Raises:
      CheckpointError: a missing, extra or mis-shaped key (named in the message).
    """
    sd = timm_to_state_dict(sd, no_embed_class=no_embed_class)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    dims = torch_dims(shapes, num_heads)
    pairs = key_map(dims)
    check_shapes(shapes, {p.torch_key: p.torch_shape for p in pairs}, "state dict")
    out: dict[str, np.ndarray] = {}
    for p in pairs:
        parts = _TRANSFORMS[p.transform][1](_to_numpy(sd[p.torch_key]), dims)
        out.update({k: np.ascontiguousarray(a) for k, a in zip(p.npz_keys, parts, strict=True)})
    return out


def _hf_name(key: str, prefix: str) -> str:
    return key if key.startswith("classifier.") else prefix + key


def check_hf_compatible(dims: Dims) -> None:
    """Refuses the official models that HF's ViT classes cannot hold.

    Raises:
      CheckpointError: a "gap" or "map" model (HF's ViT always pools the class token), a
        fixed sin-cos posemb (HF's is learned), or a
        pre-logits layer together with a head (HF has the layer only as `ViTModel`'s
        pooler, without a classifier).
    """
    if not dims.cls:
        kind = "'map' (attention-pooling head)" if dims.map_head else "'gap'"
        raise CheckpointError(f"Cannot convert a {kind} model (no class token) to Hugging "
                              "Face: its ViT classes always pool the class token.")
    if dims.tokens is None:
        raise CheckpointError("Cannot convert a posemb='sincos2d' model to Hugging Face: its "
                              "ViT classes have a learned position embedding only.")
    if dims.rep is not None and dims.classes is not None:
        raise CheckpointError(
            "Cannot convert a model with both pre_logits and a head to Hugging Face: its "
            "ViTModel has the pre-logits layer (as the pooler) but no classifier, and "
            "ViTForImageClassification a classifier but no pre-logits layer. Drop the head "
            "(head/*) for a ViTModel, or pre_logits/* and the head for a new fine-tuning.")


def npz_to_hf(flat: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Official-layout arrays → a Hugging Face ViT state dict (bit-exact, dtype kept).

    With a head: `ViTForImageClassification` names ("vit.*", "classifier.*"); without:
    `ViTModel` names, with the pre-logits layer as its pooler when there is one.

    Args:
      flat: "/"-joined keys to arrays.

    Returns:
      {HF key: tensor}, as `save_pretrained` writes them to `model.safetensors`.

    Raises:
      CheckpointError: a bad key or shape, or a model HF cannot hold (`check_hf_compatible`).
    """
    dims = npz_dims({k: tuple(np.shape(v)) for k, v in flat.items()})
    check_hf_compatible(dims)
    sd = npz_to_state_dict(flat)
    prefix = "vit." if dims.classes is not None else ""
    out: dict[str, torch.Tensor] = {}
    for p in key_map(dims):
        for key, part in zip(p.hf_keys, sd[p.torch_key].chunk(len(p.hf_keys)), strict=True):
            out[_hf_name(key, prefix)] = part.contiguous()
    return out


def hf_to_npz(sd: Mapping[str, torch.Tensor], *, num_heads: int) -> dict[str, np.ndarray]:
    """A Hugging Face `ViTModel`/`ViTForImageClassification` state dict → npz arrays.

    `ViTModel`'s pooler becomes the pre-logits layer (both are dense + tanh on the class
    token; its `pooler_act` must be tanh, which `vit_torch.hf` checks).

    Args:
      sd: the state dict as stored in `model.safetensors`.
      num_heads: `num_attention_heads` of the HF config.

    Returns:
      {"/"-joined key: array} (bit-exact, dtype kept).

    Raises:
      CheckpointError: a missing, extra or mis-shaped key (named in the message).
    """
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    dims, prefix = hf_dims(shapes, num_heads), hf_prefix(shapes)
    pairs = key_map(dims)
    want = {}
    for p in pairs:
        part = (p.torch_shape[0] // len(p.hf_keys), *p.torch_shape[1:])
        want.update({_hf_name(k, prefix): part for k in p.hf_keys})
    check_shapes(shapes, want, "Hugging Face state dict")
    torch_sd = {p.torch_key: torch.cat([sd[_hf_name(k, prefix)] for k in p.hf_keys])
                for p in pairs}
    return state_dict_to_npz(torch_sd, num_heads=num_heads)


def check_variant(dims: Dims, variant: str) -> None:
    """Checks that the checkpoint's sizes are those of `variant`.

    Args:
      dims: the checkpoint's sizes; `heads` None when the checkpoint does not store it.
      variant: a `vit_core.variants` name.

    Raises:
      ConfigError: an unknown variant name.
      CheckpointError: the sizes differ; the message gives both sets of numbers.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"Unknown variant {variant!r} (--variant); known: {', '.join(VARIANTS)}.")
    spec = decode_variant(variant)
    names = ("patch", "width", "layers", "heads", "mlp")
    want = (spec.patch_size, spec.hidden_size, spec.num_layers, spec.num_heads, spec.mlp_dim)
    got = (dims.patch, dims.width, dims.layers, dims.heads, dims.mlp)
    if any(g is not None and g != w for g, w in zip(got, want, strict=True)):
        have = ", ".join(f"{n} {'not stored' if g is None else g}"
                         for n, g in zip(names, got, strict=True))
        need = ", ".join(f"{n} {w}" for n, w in zip(names, want, strict=True))
        raise CheckpointError(f"The checkpoint is not a {variant}: it has {have}; "
                              f"{variant} has {need}.")


def load_npz(
    model: VisionTransformer, path: str | os.PathLike, *, resize: bool = False
) -> VisionTransformer:
    """Loads an official `.npz` (e.g. a released `ViT-B_16.npz`) into `model`, in place.

    Args:
      model: a `VisionTransformer` of the checkpoint's architecture.
      path: the `.npz` file.
      resize: resample the position embedding to the model's patch grid
        (`vit_core.posemb.resize_posemb`) when the file was made for another image size.

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
                "Pass resize=True to resample it (vit_core.posemb.resize_posemb)."
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
    # The CLI moved to `python -m vit_torch` (vit_torch/__main__.py); importing it from here
    # would make the two modules import each other.
    print("error: the converter's command line is now `python -m vit_torch IN OUT` "
          "(see `python -m vit_torch --help`).", file=sys.stderr)
    sys.exit(2)
