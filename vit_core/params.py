"""The parameter table of the official layout: every parameter of a `ViTSpec`, by name.

The released checkpoints of google-research/vision_transformer (flat `.npz`, Flax paths
joined with "/") are the interchange format. `param_table(spec)` lists, for every
parameter, its npz key(s) and shape, its timm / `vit_torch` state-dict name and shape, its
Hugging Face `ViTModel` name(s), and the transform between the two layouts. Everything
else derives from it: `official_shapes` (the file's keys and shapes), the Flax model's
tree (the same names), the timm and HF key maps (`vit_core.layouts`), the checks.

Transforms are pure reshapes, transposes and concatenations, so round trips are bit-exact
and keep the dtype:
  copy      the same array;
  conv      conv kernel (P, P, C, D) HWIO ⇄ weight (D, C, P, P) OIHW;
  dense     dense kernel (in, out) ⇄ weight (out, in);
  qkv       n × (D, K, Dh) query/key/value kernels ⇄ one fused (n·D, D) weight;
  qkv_bias  n × (K, Dh) biases ⇄ one fused (n·D,) bias;
  out       attention output kernel (K, Dh, D) ⇄ weight (D, D).

A hybrid's ResNet (paper §3.1) is stored as the official `models_vit.py` names it, at the
top level: `conv_root`, `gn_root`, `block{i}/unit{j}/{conv,gn}{1,2,3}` and, where a unit
changes shape, `conv_proj`/`gn_proj` (as timm's `_load_weights` reads the released
`R50+ViT-B_16.npz` and AugReg's `R_Ti_16`, `R26_S_32`, `R50_L_32` files); timm's names are
`patch_embed.backbone.stem.{conv,norm}` (`patch_embed.backbone.{conv,norm}` for the root
block alone) and `patch_embed.backbone.stages.{i}.blocks.{j}.{conv,norm}{1,2,3}` /
`downsample.{conv,norm}`. Hugging Face's ViT has no hybrid (no HF names).

`spec_from_official` reads the spec back off a file's shapes: no config needed.
numpy only.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vit_core.errors import CheckpointError, ConfigError
from vit_core.spec import RESNET_ROOT_WIDTH, ViTSpec, square_grid

POSEMB_KEY = "Transformer/posembed_input/pos_embedding"
CLS_KEY = "cls"
REGISTERS_KEY = "registers"  # (1, R, D); no released file has them (timm's `reg_token`)
MAP_PREFIX = "MAPHead_0/"  # big_vision's attention-pooling head (classifier="map")
MAP_PROBE_KEY = MAP_PREFIX + "probe"
BLOCK_KEY = re.compile(r"^Transformer/encoderblock_(\d+)/(.+)$")
# The sub-modules of an encoder block in call order, as the released files number them.
ATTENTION, MLP = "MultiHeadDotProductAttention_1", "MlpBlock_3"
RELEASED_BLOCK_NAMES = ("LayerNorm_0", ATTENTION, "LayerNorm_2", MLP)
RESNET_ROOT_KEY = "conv_root/kernel"
RESNET_UNIT_KEY = re.compile(r"^block(\d+)/unit(\d+)/")


@dataclasses.dataclass(frozen=True)
class Param:
    """One torch-side parameter and the npz key(s) it is made of.

    Attributes:
      npz_keys: one key, or the query/key/value keys fused into one torch weight.
      npz_shape: the shape of each npz key.
      timm_key: the timm / `vit_torch` state-dict name.
      timm_shape: its shape.
      transform: how the two are related (see the module docstring).
      hf_keys: the Hugging Face `ViTModel` name(s) (add "vit." in a
        `ViTForImageClassification`, except "classifier.*"); three for q/k/v, each a third
        of the torch weight along axis 0; empty: no HF counterpart.
    """

    npz_keys: tuple[str, ...]
    npz_shape: tuple[int, ...]
    timm_key: str
    timm_shape: tuple[int, ...]
    transform: str
    hf_keys: tuple[str, ...] = ()


def _fused(t: np.ndarray, n: int) -> list[np.ndarray]:
    return np.split(t, n)


# transform → (npz arrays → timm array, (timm array, spec) → npz arrays).
TRANSFORMS: dict[str, tuple[Callable[..., np.ndarray], Callable[..., tuple]]] = {
    "copy": (lambda a: a[0], lambda t, s: (t,)),
    "conv": (lambda a: a[0].transpose(3, 2, 0, 1), lambda t, s: (t.transpose(2, 3, 1, 0),)),
    "dense": (lambda a: a[0].T, lambda t, s: (t.T,)),
    "qkv": (
        lambda a: np.concatenate([k.reshape(k.shape[0], -1).T for k in a]),  # (n·D, D)
        lambda t, s: tuple(w.T.reshape(s.hidden_size, s.num_heads, s.head_dim)
                           for w in _fused(t, len(t) // s.hidden_size)),
    ),
    "qkv_bias": (
        lambda a: np.concatenate([b.reshape(-1) for b in a]),  # (n·D,)
        lambda t, s: tuple(b.reshape(s.num_heads, s.head_dim)
                           for b in _fused(t, len(t) // s.hidden_size)),
    ),
    "out": (
        lambda a: a[0].reshape(-1, a[0].shape[-1]).T,  # (D, K·Dh)
        lambda t, s: (t.T.reshape(s.num_heads, s.head_dim, s.hidden_size),),
    ),
}


def _attention(npz: str, timm: str, spec: ViTSpec, hf: str | None) -> list[Param]:
    """A self-attention's q/k/v (fused in timm) and output projection."""
    D, K, Dh = spec.hidden_size, spec.num_heads, spec.head_dim
    qkv = tuple(f"{npz}{x}/" for x in ("query", "key", "value"))
    hqkv = tuple(f"{hf}attention.attention.{x}." for x in ("query", "key", "value")) if hf else ()
    return [
        Param(tuple(q + "kernel" for q in qkv), (D, K, Dh), timm + "qkv.weight", (3 * D, D),
              "qkv", tuple(q + "weight" for q in hqkv)),
        Param(tuple(q + "bias" for q in qkv), (K, Dh), timm + "qkv.bias", (3 * D,), "qkv_bias",
              tuple(q + "bias" for q in hqkv)),
        Param((npz + "out/kernel",), (K, Dh, D), timm + "proj.weight", (D, D), "out",
              (hf + "attention.output.dense.weight",) if hf else ()),
        Param((npz + "out/bias",), (D,), timm + "proj.bias", (D,), "copy",
              (hf + "attention.output.dense.bias",) if hf else ()),
    ]


def _norm(npz: str, timm: str, spec: ViTSpec, hf: str | None) -> list[Param]:
    D = spec.hidden_size
    return [Param((npz + "scale",), (D,), timm + "weight", (D,), "copy",
                  (hf + "weight",) if hf else ()),
            Param((npz + "bias",), (D,), timm + "bias", (D,), "copy",
                  (hf + "bias",) if hf else ())]


def _mlp(npz: str, timm: str, spec: ViTSpec, hf: str | None) -> list[Param]:
    D, M = spec.hidden_size, spec.mlp_dim
    fc1, fc2 = (hf + "intermediate.dense.", hf + "output.dense.") if hf else (None, None)
    return [
        Param((npz + "Dense_0/kernel",), (D, M), timm + "fc1.weight", (M, D), "dense",
              (fc1 + "weight",) if fc1 else ()),
        Param((npz + "Dense_0/bias",), (M,), timm + "fc1.bias", (M,), "copy",
              (fc1 + "bias",) if fc1 else ()),
        Param((npz + "Dense_1/kernel",), (M, D), timm + "fc2.weight", (D, M), "dense",
              (fc2 + "weight",) if fc2 else ()),
        Param((npz + "Dense_1/bias",), (D,), timm + "fc2.bias", (D,), "copy",
              (fc2 + "bias",) if fc2 else ()),
    ]


def param_table(spec: ViTSpec) -> list[Param]:
    """THE table: every parameter of `spec`, in timm's state-dict order.

    Args:
      spec: the architecture.

    Returns:
      One `Param` per timm parameter.
    """
    P, C, D = spec.patch_size, 3, spec.hidden_size
    e = "embeddings."
    table: list[Param] = []
    if spec.has_class_token:
        table.append(Param((CLS_KEY,), (1, 1, D), "cls_token", (1, 1, D), "copy",
                           (e + "cls_token",)))
    if spec.num_registers:  # HF's ViT has no registers: no HF name
        R = spec.num_registers
        table.append(Param((REGISTERS_KEY,), (1, R, D), "reg_token", (1, R, D), "copy"))
    if spec.posemb == "learn":  # sincos2d: a fixed table, no parameter
        pos = (1, spec.num_prefix_tokens + spec.num_patches, D)
        table.append(Param((POSEMB_KEY,), pos, "pos_embed", pos, "copy",
                           (e + "position_embeddings",)))
    if spec.is_hybrid:  # HF's ViT has no ResNet: no HF names (refused by the HF layout)
        table += _resnet(spec)
        C = spec.resnet_channels
    hf = (lambda name: ()) if spec.is_hybrid else (lambda name: (e + name,))
    table += [
        Param(("embedding/kernel",), (P, P, C, D), "patch_embed.proj.weight", (D, C, P, P),
              "conv", hf("patch_embeddings.projection.weight")),
        Param(("embedding/bias",), (D,), "patch_embed.proj.bias", (D,), "copy",
              hf("patch_embeddings.projection.bias")),
    ]
    for i in range(spec.num_layers):
        n, t, h = f"Transformer/encoderblock_{i}/", f"blocks.{i}.", f"encoder.layer.{i}."
        table += _norm(n + "LayerNorm_0/", t + "norm1.", spec, h + "layernorm_before.")
        table += _attention(f"{n}{ATTENTION}/", t + "attn.", spec, h)
        table += _norm(n + "LayerNorm_2/", t + "norm2.", spec, h + "layernorm_after.")
        table += _mlp(f"{n}{MLP}/", t + "mlp.", spec, h)
    table += _norm("Transformer/encoder_norm/", "norm.", spec, "layernorm.")
    if spec.classifier == "map":
        table += _map_head(spec)
    if spec.representation_size is not None:  # HF: a ViTModel's pooler (dense + tanh)
        R = spec.representation_size
        table += [
            Param(("pre_logits/kernel",), (D, R), "pre_logits.fc.weight", (R, D), "dense",
                  ("pooler.dense.weight",)),
            Param(("pre_logits/bias",), (R,), "pre_logits.fc.bias", (R,), "copy",
                  ("pooler.dense.bias",)),
        ]
    if spec.num_classes:
        N, W = spec.num_classes, spec.pooled_width
        table += [
            Param(("head/kernel",), (W, N), "head.weight", (N, W), "dense",
                  ("classifier.weight",)),
            Param(("head/bias",), (N,), "head.bias", (N,), "copy", ("classifier.bias",)),
        ]
    return table


def _std_conv(npz: str, timm: str, k: int, cin: int, cout: int) -> Param:
    """A bias-free weight-standardised conv: kernel (k, k, in, out) ⇄ weight (out, in, k, k)."""
    return Param((npz + "kernel",), (k, k, cin, cout), timm + "weight", (cout, cin, k, k), "conv")


def _group_norm(npz: str, timm: str, channels: int) -> list[Param]:
    return [Param((npz + "scale",), (channels,), timm + "weight", (channels,), "copy"),
            Param((npz + "bias",), (channels,), timm + "bias", (channels,), "copy")]


def _resnet(spec: ViTSpec) -> list[Param]:
    """A hybrid's ResNet v2 (official `models_vit.py` + `models_resnet.py`; timm's ResNetV2
    with `preact=False`): root block, then bottleneck units whose first changes the shape
    through a projection (`conv_proj`/`gn_proj` ⇄ `downsample`)."""
    width = RESNET_ROOT_WIDTH * spec.resnet_width
    layers = spec.resnet_layers or ()
    t = "patch_embed.backbone."
    root = t + "stem." if layers else t  # timm: the root block alone is the backbone
    table = [_std_conv("conv_root/", root + "conv.", 7, 3, width),
             *_group_norm("gn_root/", root + "norm.", width)]
    cin = width
    for i, units in enumerate(layers):
        mid = width * 2 ** i
        cout = 4 * mid
        for j in range(units):
            n, b = f"block{i + 1}/unit{j + 1}/", f"{t}stages.{i}.blocks.{j}."
            if j == 0 and (cin != cout or i > 0):  # the official `needs_projection`
                table += [_std_conv(n + "conv_proj/", b + "downsample.conv.", 1, cin, cout),
                          *_group_norm(n + "gn_proj/", b + "downsample.norm.", cout)]
            for r, (k, a, z) in enumerate(((1, cin, mid), (3, mid, mid), (1, mid, cout)), 1):
                table += [_std_conv(f"{n}conv{r}/", f"{b}conv{r}.", k, a, z),
                          *_group_norm(f"{n}gn{r}/", f"{b}norm{r}.", z)]
            cin = cout
    return table


def _map_head(spec: ViTSpec) -> list[Param]:
    """big_vision's `MAPHead_0` ⇄ timm's `AttentionPoolLatent` (`attn_pool.*`).

    As timm's `_load_weights` maps SigLIP checkpoints: the probe is the latent query, the
    query kernel the `q` projection, the key and value kernels the fused `kv` (key first).
    """
    D, K, Dh = spec.hidden_size, spec.num_heads, spec.head_dim
    a, t = MAP_PREFIX + "MultiHeadDotProductAttention_0/", "attn_pool."
    kv = (a + "key/", a + "value/")
    return [
        Param((MAP_PROBE_KEY,), (1, 1, D), t + "latent", (1, 1, D), "copy"),
        Param((a + "query/kernel",), (D, K, Dh), t + "q.weight", (D, D), "qkv"),
        Param((a + "query/bias",), (K, Dh), t + "q.bias", (D,), "qkv_bias"),
        Param(tuple(x + "kernel" for x in kv), (D, K, Dh), t + "kv.weight", (2 * D, D), "qkv"),
        Param(tuple(x + "bias" for x in kv), (K, Dh), t + "kv.bias", (2 * D,), "qkv_bias"),
        Param((a + "out/kernel",), (K, Dh, D), t + "proj.weight", (D, D), "out"),
        Param((a + "out/bias",), (D,), t + "proj.bias", (D,), "copy"),
        *_norm(MAP_PREFIX + "LayerNorm_0/", t + "norm.", spec, None),
        *_mlp(MAP_PREFIX + "MlpBlock_0/", t + "mlp.", spec, None),
    ]


def official_shapes(spec: ViTSpec) -> dict[str, tuple[int, ...]]:
    """Every key of the official `.npz` layout of `spec`, with its shape."""
    return {k: p.npz_shape for p in param_table(spec) for k in p.npz_keys}


def shape_of(value: Any) -> tuple[int, ...]:
    """The shape of an array, tensor (also on torch's meta device) or ShapeDtypeStruct."""
    shape = getattr(value, "shape", None)
    return tuple(int(n) for n in (np.shape(value) if shape is None else shape))


def shape_problems(
    got: Mapping[str, tuple[int, ...]], want: Mapping[str, tuple[int, ...]]
) -> list[str]:
    """Every missing, unexpected or mis-shaped key of `got` (the checkpoint) against `want`
    (the model), in words."""
    problems = [f"missing key {k} (model expects shape {tuple(want[k])})"
                for k in want if k not in got]
    problems += [f"unexpected key {k} (shape {tuple(got[k])})" for k in got if k not in want]
    problems += [f"shape mismatch at {k}: checkpoint {tuple(got[k])}, model {tuple(want[k])}"
                 for k in want if k in got and tuple(got[k]) != tuple(want[k])]
    return problems


def check_keys(got: Mapping[str, Any], want: Mapping[str, tuple[int, ...]], what: str) -> None:
    """Raises one `CheckpointError` naming what in `got` does not fit `want`'s shapes.

    Args:
      got: key → array (or anything with a shape) that was read.
      want: key → the expected shape.
      what: how the message names `got` ("The checkpoint", "The state dict", ...).
    """
    problems = shape_problems({k: shape_of(v) for k, v in got.items()}, want)
    if problems:
        more = f"; and {len(problems) - 6} more" if len(problems) > 6 else ""
        raise CheckpointError(f"{what} does not fit the ViT layout: "
                              + "; ".join(problems[:6]) + more + ".")


def _dim(flat: Mapping[str, Any], key: str, axis: int) -> int:
    if key not in flat or len(shape_of(flat[key])) <= axis:
        raise CheckpointError(f"Not an official-layout ViT checkpoint: key {key} is missing "
                              "or has too few axes.")
    return shape_of(flat[key])[axis]


def _resnet_from_official(flat: Mapping[str, Any]) -> tuple[tuple[int, ...], int] | None:
    """A hybrid's (units per stage, width factor) read off its keys; None: no ResNet."""
    if RESNET_ROOT_KEY not in flat:
        return None
    units: dict[int, set[int]] = {}
    for m in map(RESNET_UNIT_KEY.match, flat):
        if m:
            units.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if sorted(units) != list(range(1, len(units) + 1)) or any(
            sorted(u) != list(range(1, len(u) + 1)) for u in units.values()):
        raise CheckpointError(f"The ResNet's blocks/units are not numbered 1, 2, ...: "
                              f"{ {f'block{b}': sorted(u) for b, u in sorted(units.items())} }.")
    width, rest = divmod(_dim(flat, RESNET_ROOT_KEY, 3), RESNET_ROOT_WIDTH)
    if rest or not width:
        raise CheckpointError(f"{RESNET_ROOT_KEY} has {_dim(flat, RESNET_ROOT_KEY, 3)} output "
                              f"channels, not a multiple of {RESNET_ROOT_WIDTH}.")
    return tuple(len(units[b]) for b in sorted(units)), width


def spec_from_official(
    flat: Mapping[str, Any], *, image_size: tuple[int, int] | None = None,
    layer_norm_eps: float | None = None, gelu_approximate: bool | None = None,
) -> ViTSpec:
    """Reads the spec off an official-layout dict's shapes, then checks every key against it.

    Shapes fix the sizes, the head, the classifier (a `cls` key: "token"; a `MAPHead_0`:
    "map"; neither: "gap"), the posemb (no learned one: "sincos2d"), the registers and the
    position grid's size. They cannot fix the LayerNorm epsilon and the GELU form (the
    official 1e-6 and tanh unless said), nor a non-square grid's orientation (the most square
    one, rows ≥ columns, unless `image_size` says).

    Args:
      flat: official layout with per-block keys.
      image_size: (H, W) the learned posemb was made for, if known.
      layer_norm_eps, gelu_approximate: what the source says (None: the official values).

    Returns:
      The spec; every key and shape of `flat` has been checked against it.

    Raises:
      CheckpointError: a missing key, or any key or shape that does not fit the spec read
        off the embedding and the first block (one message naming them).
    """
    P, D = _dim(flat, "embedding/kernel", 0), _dim(flat, "embedding/kernel", 3)
    first = "Transformer/encoderblock_0/"
    num_heads = _dim(flat, f"{first}{ATTENTION}/query/kernel", 1)
    mlp_dim = _dim(flat, f"{first}{MLP}/Dense_0/kernel", 1)
    num_layers = len({m.group(1) for m in map(BLOCK_KEY.match, flat) if m})
    classifier = "token" if CLS_KEY in flat else "map" if MAP_PROBE_KEY in flat else "gap"
    registers = _dim(flat, REGISTERS_KEY, 1) if REGISTERS_KEY in flat else 0
    prefix = int(classifier == "token") + registers
    resnet = _resnet_from_official(flat)
    # Image pixels per token side: the patch, times the ResNet's stride for a hybrid.
    stride = P * (ViTSpec(1, 1, 1, 1, 1, resnet_layers=resnet[0]).resnet_stride
                  if resnet else 1)
    posemb = "learn" if POSEMB_KEY in flat else "sincos2d"
    if posemb == "learn":
        patches = _dim(flat, POSEMB_KEY, 1) - prefix
        if patches <= 0:
            raise CheckpointError(f"{POSEMB_KEY} has {patches + prefix} rows, not more than "
                                  f"the {prefix} class/register tokens.")
        got = (image_size[0] // stride) * (image_size[1] // stride) if image_size else None
        if image_size is not None and got != patches:
            raise CheckpointError(
                f"{POSEMB_KEY} holds {patches} patch positions, but {image_size[0]}x"
                f"{image_size[1]} images give {got}.")
        if image_size is None:
            rows, cols = square_grid(patches)
            image_size = (rows * stride, cols * stride)
    spec_values: dict[str, Any] = dict(
        patch_size=P, hidden_size=D, num_layers=num_layers, num_heads=num_heads,
        mlp_dim=mlp_dim, image_size=tuple(image_size or (224, 224)),
        num_classes=_dim(flat, "head/kernel", 1) if "head/kernel" in flat else 0,
        classifier=classifier, posemb=posemb,
        representation_size=_dim(flat, "pre_logits/kernel", 1)
        if "pre_logits/kernel" in flat else None,
        num_registers=registers,
    )
    if resnet:
        spec_values.update(resnet_layers=resnet[0], resnet_width=resnet[1])
    if layer_norm_eps is not None:
        spec_values["layer_norm_eps"] = layer_norm_eps
    if gelu_approximate is not None:
        spec_values["gelu_approximate"] = gelu_approximate
    try:
        spec = ViTSpec(**spec_values).validate()
    except ConfigError as e:  # sizes no ViT has
        raise CheckpointError(f"The checkpoint's shapes describe no valid ViT: {e}") from None
    check_keys(flat, official_shapes(spec), "The checkpoint")
    return spec
