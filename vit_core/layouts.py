"""Every foreign layout of the same weights, as a mapping onto the parameter table.

The official `.npz` layout (`vit_core.params`) is the one interchange format; each other
layout converts to it and back here, on plain numpy dicts, and a conversion refuses what
the spec cannot hold before anything is written:
  * linen numbering: the official layout with the block's sub-modules numbered per type
    (`LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0`), as the
    official repository's current code and big_vision name them;
  * scan: blocks stacked on a leading axis under `Transformer/encoderblock/`;
  * big_vision's ViT: linen numbering, `pos_embedding` at the top without a class-token
    row, optionally stacked and under a `params/` (or older `opt/target/`) prefix;
  * timm's `VisionTransformer` state dict (= `vit_torch`'s), torch names and layouts;
  * Hugging Face `ViTModel` / `ViTForImageClassification` state dicts (timm's weights,
    with q/k/v split into three).
Torch tensors never come here: `vit_torch` turns them into numpy arrays first (bit-exact),
and `vit_jax` reads `.safetensors` with `safetensors.numpy`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_core.errors import CheckpointError, ConfigError
from vit_core.npz import SEP
from vit_core.params import (
    BLOCK_KEY,
    CLS_KEY,
    POSEMB_KEY,
    RELEASED_BLOCK_NAMES,
    TRANSFORMS,
    check_keys,
    param_table,
    shape_of,
    spec_from_official,
)
from vit_core.spec import RESNET_ROOT_WIDTH, ViTSpec, square_grid

Arrays = Mapping[str, Any]


# ----------------------------------------------------------------------- scan layout
STACKED_PREFIX = "Transformer/encoderblock/"


def unstack_blocks(flat: Arrays) -> dict[str, Any]:
    """Scan layout (`Transformer/encoderblock/...`, leading layer axis) → per-block keys."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        if name.startswith(STACKED_PREFIX):
            rest = name[len(STACKED_PREFIX):]
            for i in range(value.shape[0]):
                out[f"Transformer/encoderblock_{i}/{rest}"] = value[i]
        else:
            out[name] = value
    return out


def stack_blocks(flat: Arrays) -> dict[str, Any]:
    """Per-block keys → scan layout, the inverse of `unstack_blocks`."""
    out: dict[str, Any] = {}
    per_block: dict[str, dict[int, Any]] = {}
    for name, value in flat.items():
        match = BLOCK_KEY.match(name)
        if match:
            per_block.setdefault(match.group(2), {})[int(match.group(1))] = value
        else:
            out[name] = value
    for rest, layers in per_block.items():
        if sorted(layers) != list(range(len(layers))):
            raise CheckpointError(f"Blocks of {rest!r} are not numbered 0..N-1: {sorted(layers)}")
        out[STACKED_PREFIX + rest] = np.stack([np.asarray(layers[i]) for i in range(len(layers))])
    return out


# ------------------------------------------------------- linen numbering, big_vision
LINEN_BLOCK_NAMES = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
# big_vision (models/vit.py) → official; every key not named here is the same in both
# (`embedding/*`, `cls`, `Transformer/encoder_norm/*`, `pre_logits/*`, `head/*`, `MAPHead_0/*`):
#   pos_embedding (1, h*w, D)            → Transformer/posembed_input/pos_embedding; with a
#                                          class token (pool_type "tok") a zero row is put in
#                                          front: big_vision adds the posemb before
#                                          concatenating the token, the official model after.
#   Transformer/pos_embedding            → the same (big_vision files before 2022).
#   Transformer/encoderblock/X (L, ...)  → Transformer/encoderblock_{i}/X (scan=True models).
#   encoderblock_{i}/LINEN_BLOCK_NAMES   → encoderblock_{i}/RELEASED_BLOCK_NAMES.
#   prefixes params/, opt/target/        → none (a training checkpoint's optimizer state
#                                          is dropped).
# Transposes: none. Both are Flax trees with the same kernel layouts.
BIG_VISION_POSEMB_KEYS = ("pos_embedding", "Transformer/pos_embedding")
PARAM_PREFIXES = ("params/", "opt/target/")


def _strip_prefix(flat: Arrays) -> dict[str, Any]:
    """Only the parameters, without a big_vision training checkpoint's prefix."""
    if "embedding/kernel" not in flat:
        for prefix in PARAM_PREFIXES:
            if prefix + "embedding/kernel" in flat:
                return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
    return dict(flat)


def block_numbering(flat: Arrays) -> str:
    """Which sub-module names the per-block keys use: "released" or "linen".

    Raises:
      CheckpointError: a block with other sub-modules, or blocks that mix the two.
    """
    modules: dict[int, set[str]] = {}
    for key in flat:
        match = BLOCK_KEY.match(key)
        if match:
            modules.setdefault(int(match.group(1)), set()).add(match.group(2).split(SEP)[0])
    kinds: dict[str, list[int]] = {}
    for i, names in sorted(modules.items()):
        if names == set(RELEASED_BLOCK_NAMES):
            kinds.setdefault("released", []).append(i)
        elif names == set(LINEN_BLOCK_NAMES):
            kinds.setdefault("linen", []).append(i)
        else:
            raise CheckpointError(
                f"Transformer/encoderblock_{i} has sub-modules {sorted(names)}; expected "
                f"{list(RELEASED_BLOCK_NAMES)} (released files) or {list(LINEN_BLOCK_NAMES)} "
                "(linen numbering)."
            )
    if len(kinds) > 1:
        raise CheckpointError(
            f"The encoder blocks mix two numberings: released names in blocks "
            f"{kinds['released']}, linen names in blocks {kinds['linen']}; the file is corrupt."
        )
    return next(iter(kinds), "released")


def _rename_blocks(flat: Arrays, source: tuple, target: tuple) -> dict[str, Any]:
    rename = dict(zip(source, target, strict=True))
    out: dict[str, Any] = {}
    for key, value in flat.items():
        match = BLOCK_KEY.match(key)
        if match:
            module, rest = match.group(2).split(SEP, 1)
            key = f"Transformer/encoderblock_{match.group(1)}/{rename[module]}/{rest}"
        out[key] = value
    return out


def to_official(flat: Arrays, *, image_size: tuple[int, int] | None = None
                ) -> tuple[dict[str, Any], ViTSpec]:
    """Any Flax-side layout (official, linen, scan, big_vision) → the official layout.

    Accepted: the official layout (released or linen numbering), per-block or stacked;
    big_vision's ViT (`pos_embedding` at the top, linen numbering, per-block or stacked,
    optionally under `params/` or `opt/target/`), pool types tok/gap/map, posemb learn or
    sincos2d. The key map is written out above `BIG_VISION_POSEMB_KEYS`.

    Args:
      flat: {"a/b": array}, e.g. from `vit_core.npz.read_npz`.
      image_size: (H, W) of a learned posemb, if known (see `spec_from_official`).

    Returns:
      (the official flat dict with per-block keys and released numbering, its spec).

    Raises:
      CheckpointError: mixed numberings, two position embeddings, or any key or shape that
        does not fit the spec read off the file.
    """
    flat = unstack_blocks(_strip_prefix(flat))
    if block_numbering(flat) == "linen":
        flat = _rename_blocks(flat, LINEN_BLOCK_NAMES, RELEASED_BLOCK_NAMES)
    found = [k for k in (POSEMB_KEY, *BIG_VISION_POSEMB_KEYS) if k in flat]
    if len(found) > 1:
        raise CheckpointError(f"Two position embeddings in one checkpoint: {found}.")
    if found and found[0] != POSEMB_KEY:
        flat[POSEMB_KEY] = _posemb_to_official(flat.pop(found[0]), has_cls=CLS_KEY in flat)
    return flat, spec_from_official(flat, image_size=image_size)


def _posemb_to_official(posemb: np.ndarray, *, has_cls: bool) -> np.ndarray:
    """big_vision's (1, h*w, D) posemb → official (1, [1 +] h*w, D)."""
    n = posemb.shape[1]
    if not has_cls or math.isqrt(n) ** 2 != n:
        # No class token, or an old big_vision file that already has its row (h*w + 1).
        return posemb
    return np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)  # (1, 1 + h*w, D)


def to_big_vision(flat: Arrays, *, stacked: bool = False) -> dict[str, Any]:
    """Official layout → big_vision's ViT layout (the inverse of `to_official`).

    With a class token, its posemb row is added to `cls` (as big_vision's own
    `fix_old_checkpoints` does), which computes the same first token.

    Args:
      flat: official flat dict (per-block keys).
      stacked: stack the blocks under `Transformer/encoderblock/` (big_vision `scan=True`).

    Returns:
      {key: array} as big_vision's `utils.load_params` reads it from an `.npz` (no prefix).

    Raises:
      CheckpointError: a key or shape that does not fit, or registers (big_vision's ViT
        has none).
    """
    spec = spec_from_official(flat)
    if spec.is_hybrid:
        raise CheckpointError("big_vision's ViT has no ResNet backbone; this model is a hybrid "
                              f"(resnet_layers={spec.resnet_layers}).")
    if spec.num_registers:
        raise CheckpointError("big_vision's ViT has no register tokens; this model has "
                              f"{spec.num_registers}.")
    out = _rename_blocks(flat, RELEASED_BLOCK_NAMES, LINEN_BLOCK_NAMES)
    if POSEMB_KEY in out:
        posemb = np.asarray(out.pop(POSEMB_KEY))
        if CLS_KEY in out:
            row, posemb = posemb[:, :1], posemb[:, 1:]  # (1, 1, D), (1, h*w, D)
            # A zero row (as `to_official` writes) is not added: the round trip stays
            # bit-exact even for a -0.0 in `cls`.
            if np.any(row):
                out[CLS_KEY] = np.asarray(out[CLS_KEY]) + row
        out[BIG_VISION_POSEMB_KEYS[0]] = posemb
    return stack_blocks(out) if stacked else out


# ---------------------------------------------------------------------------- timm
# timm VisionTransformer options that the official layout cannot hold, by key pattern.
TIMM_REFUSED = (
    (r"^fc_norm\.", "timm's fc_norm (a LayerNorm after average pooling; the official 'gap' "
     "model normalises before pooling: build timm with fc_norm=False)"),
    (r"^norm_pre\.", "timm's norm_pre (a LayerNorm before the blocks, pre_norm=True)"),
    (r"\.ls[12]\.", "timm's LayerScale (init_values)"),
    (r"\.attn\.[qk]_norm\.", "timm's q/k normalisation (qk_norm=True)"),
    (r"\.(attn|mlp)\.norm\.", "timm's extra attention/MLP norm (scale_attn/mlp_norm)"),
    (r"^patch_embed\.norm\.", "timm's patch-embedding norm"),
    (r"^head_drop\.|^dist_token$|^head_dist\.", "DeiT's distillation token/head"),
)
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def _size(shapes: Mapping[str, tuple[int, ...]], key: str, axis: int, what: str) -> int:
    if key not in shapes or len(shapes[key]) <= axis:
        raise CheckpointError(f"{what} does not fit a ViT: key {key} is missing.")
    return int(shapes[key][axis])


def _grid_image_size(patches: int, patch: int, image_size: tuple[int, int] | None,
                     what: str) -> tuple[int, int]:
    """The image size of a learned posemb of `patches` rows (checked against a given one)."""
    if image_size is not None:
        if (image_size[0] // patch) * (image_size[1] // patch) != patches:
            raise CheckpointError(
                f"{what}'s position embedding holds {patches} patch positions, but "
                f"{image_size[0]}x{image_size[1]} images give "
                f"{(image_size[0] // patch) * (image_size[1] // patch)}.")
        return tuple(image_size)
    rows, cols = square_grid(patches)
    return (rows * patch, cols * patch)


_TIMM_STAGE_BLOCK = re.compile(r"^patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.")
_TIMM_ROOT_KEYS = ("patch_embed.backbone.stem.conv.weight", "patch_embed.backbone.conv.weight")


def _timm_resnet(shapes: Mapping[str, tuple[int, ...]]) -> tuple[tuple[int, ...], int] | None:
    """A timm hybrid's (units per stage, width factor) read off its backbone keys; None: no
    backbone. Only timm's ResNetV2 layout (`vit_*_r*` models) maps onto the official one."""
    if not any(k.startswith("patch_embed.backbone.") for k in shapes):
        return None
    root = next((k for k in _TIMM_ROOT_KEYS if k in shapes), None)
    if root is None or len(shapes[root]) != 4 or shapes[root][2:] != (7, 7):
        raise CheckpointError(
            "Cannot convert key patch_embed.backbone.*: only timm's ResNetV2 hybrids (a 7×7 "
            "StdConv root block: vit_*_r26/r50_*, vit_tiny_r_*) have a counterpart in the "
            "official layout.")
    width, rest = divmod(shapes[root][0], RESNET_ROOT_WIDTH)
    if rest or not width:
        raise CheckpointError(f"Cannot convert key {root}: {shapes[root][0]} channels are not a "
                              f"multiple of {RESNET_ROOT_WIDTH}.")
    units: dict[int, set[int]] = {}
    for m in map(_TIMM_STAGE_BLOCK.match, shapes):
        if m:
            units.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return tuple(len(units[i]) for i in sorted(units)), width


def spec_from_timm(
    sd: Arrays, *, num_heads: int, no_embed_class: bool = False,
    image_size: tuple[int, int] | None = None, layer_norm_eps: float | None = None,
    gelu_approximate: bool = False,
) -> ViTSpec:
    """Reads a spec off a timm / `vit_torch` state dict's shapes, refusing what it can't hold.

    Args:
      sd: name → array (or anything with a shape).
      num_heads: K, which a state dict does not store.
      no_embed_class: the model was built with timm's `no_embed_class=True` (its pos_embed
        has no rows for the class and register tokens); a state dict cannot tell.
      image_size: (H, W) the learned posemb is for, if known.
      layer_norm_eps: the model's epsilon (None: timm's 1e-6).
      gelu_approximate: timm's ViTs use the exact GELU (False); `vit_torch` ones may not.

    Returns:
      The validated spec.

    Raises:
      CheckpointError: a timm option without a counterpart (named by its key, with what
        to do), or a position embedding that fits no token count.
    """
    for key in sd:
        for pattern, what in TIMM_REFUSED:
            if re.search(pattern, key):
                raise CheckpointError(f"Cannot convert key {key}: {what} has no counterpart "
                                      "in the official ViT layout.")
    shapes = {k: shape_of(v) for k, v in sd.items()}
    what = "The state dict"
    P = _size(shapes, "patch_embed.proj.weight", 2, what)
    channels = _size(shapes, "patch_embed.proj.weight", 1, what)
    resnet = _timm_resnet(shapes)
    stride = P  # image pixels per token side
    if resnet is not None:
        stride = P * ViTSpec(1, 1, 1, 1, 1, resnet_layers=resnet[0]).resnet_stride
    elif channels != 3:
        raise CheckpointError(f"The patch embedding takes {channels} channels; the ViT layout "
                              "takes RGB images (3).")
    has_cls, has_map = "cls_token" in shapes, any(k.startswith("attn_pool.") for k in shapes)
    if has_cls and has_map:
        raise CheckpointError(
            "Cannot convert key cls_token: a class token together with an attention-pooling "
            "head (timm's global_pool='map' with class_token=True) has no counterpart; the "
            "official 'map' model has no class token: build timm with class_token=False.")
    registers = _size(shapes, "reg_token", 1, what) if "reg_token" in shapes else 0
    classifier = "token" if has_cls else "map" if has_map else "gap"
    prefix = int(has_cls) + registers
    if "pos_embed" in shapes:
        rows = _size(shapes, "pos_embed", 1, what)
        patches = rows if no_embed_class else rows - prefix
        if not no_embed_class and image_size is None and prefix and (
                math.isqrt(patches) ** 2 != patches and math.isqrt(rows) ** 2 == rows):
            raise CheckpointError(
                f"Cannot convert key pos_embed: its {rows} rows are a square grid without the "
                f"{prefix} class/register token(s): the model was built with timm's "
                "no_embed_class=True; say so (--no-embed-class), or give the image size.")
        if patches <= 0:
            raise CheckpointError(f"Cannot convert key pos_embed: {rows} rows for {prefix} "
                                  "prefix tokens.")
        image_size = _grid_image_size(patches, stride, image_size, what)
    else:
        image_size = image_size or (stride * (224 // stride),) * 2
    values: dict[str, Any] = dict(
        patch_size=P, hidden_size=_size(shapes, "patch_embed.proj.weight", 0, what),
        num_layers=len({m.group(1) for m in map(_TIMM_BLOCK.match, shapes) if m}),
        num_heads=num_heads, mlp_dim=_size(shapes, "blocks.0.mlp.fc1.weight", 0, what),
        image_size=image_size, classifier=classifier,
        posemb="learn" if "pos_embed" in shapes else "sincos2d",
        num_classes=_size(shapes, "head.weight", 0, what) if "head.weight" in shapes else 0,
        representation_size=_size(shapes, "pre_logits.fc.weight", 0, what)
        if "pre_logits.fc.weight" in shapes else None,
        num_registers=registers, gelu_approximate=gelu_approximate,
    )
    if resnet is not None:
        values.update(resnet_layers=resnet[0], resnet_width=resnet[1])
    if layer_norm_eps is not None:
        values["layer_norm_eps"] = layer_norm_eps
    try:
        return ViTSpec(**values).validate()
    except ConfigError as e:
        raise CheckpointError(f"The state dict's shapes describe no valid ViT: {e}") from None


def timm_to_official(sd: Arrays, spec: ViTSpec, *, no_embed_class: bool = False
                     ) -> dict[str, np.ndarray]:
    """A timm / `vit_torch` state dict (numpy arrays) → the official layout, bit-exact.

    Args:
      sd: name → numpy array.
      spec: its spec (`spec_from_timm`).
      no_embed_class: prepend zero posemb rows for the class/register tokens (they then
        get exactly nothing added, as in timm's `no_embed_class=True` model).

    Returns:
      {"/"-joined key: array}, ready for `vit_core.npz.write_npz`.

    Raises:
      CheckpointError: a missing, extra or mis-shaped key (named in the message).
    """
    sd = dict(sd)
    if no_embed_class and "pos_embed" in sd and spec.num_prefix_tokens:
        pos = np.asarray(sd["pos_embed"])  # (1, N, D) without the prefix rows
        zeros = np.zeros((1, spec.num_prefix_tokens, pos.shape[2]), pos.dtype)
        sd["pos_embed"] = np.concatenate([zeros, pos], axis=1)
    table = param_table(spec)
    check_keys(sd, {p.timm_key: p.timm_shape for p in table}, "The state dict")
    out: dict[str, np.ndarray] = {}
    for p in table:
        parts = TRANSFORMS[p.transform][1](np.asarray(sd[p.timm_key]), spec)
        out.update({k: np.ascontiguousarray(a) for k, a in zip(p.npz_keys, parts, strict=True)})
    return out


def official_to_timm(flat: Arrays, spec: ViTSpec | None = None) -> dict[str, np.ndarray]:
    """Official-layout arrays → a timm / `vit_torch` state dict of numpy arrays, bit-exact.

    Args:
      flat: "/"-joined keys to arrays.
      spec: its spec (read off the shapes when None).

    Returns:
      {timm key: C-contiguous array}.

    Raises:
      CheckpointError: a missing, extra or mis-shaped key (named in the message).
    """
    if spec is None:
        spec = spec_from_official(flat)
    table = param_table(spec)
    check_keys(flat, {k: p.npz_shape for p in table for k in p.npz_keys}, "The checkpoint")
    return {p.timm_key: np.ascontiguousarray(TRANSFORMS[p.transform][0](
                tuple(np.asarray(flat[k]) for k in p.npz_keys)))
            for p in table}


# ------------------------------------------------------------------------ Hugging Face
def check_hf_compatible(spec: ViTSpec) -> None:
    """Refuses the models that Hugging Face's ViT classes cannot hold.

    Raises:
      CheckpointError: no class token ("gap", "map"), a fixed sin-cos posemb, registers,
        or a pre-logits layer together with a head (HF has the layer only as `ViTModel`'s
        pooler, without a classifier).
    """
    if spec.is_hybrid:
        raise CheckpointError("Cannot convert a hybrid ResNet+ViT to Hugging Face: its ViT "
                              "classes have no ResNet backbone (use timm's layout).")
    if not spec.has_class_token:
        kind = "'map' (attention-pooling head)" if spec.classifier == "map" else "'gap'"
        raise CheckpointError(f"Cannot convert a {kind} model (no class token) to Hugging "
                              "Face: its ViT classes always pool the class token.")
    if spec.posemb != "learn":
        raise CheckpointError("Cannot convert a posemb='sincos2d' model to Hugging Face: its "
                              "ViT classes have a learned position embedding only.")
    if spec.num_registers:
        raise CheckpointError("Cannot convert a model with register tokens to Hugging Face: "
                              "its ViT classes have none.")
    if spec.representation_size is not None and spec.num_classes:
        raise CheckpointError(
            "Cannot convert a model with both pre_logits and a head to Hugging Face: its "
            "ViTModel has the pre-logits layer (as the pooler) but no classifier, and "
            "ViTForImageClassification a classifier but no pre-logits layer. Drop the head "
            "(head/*) for a ViTModel, or pre_logits/* and the head for a new fine-tuning.")


def hf_prefix(keys: Any) -> str:
    """"vit." for a `ViTForImageClassification` state dict, "" for a `ViTModel` one."""
    return "vit." if any(k.startswith("vit.") for k in keys) else ""


def _hf_name(key: str, prefix: str) -> str:
    return key if key.startswith("classifier.") else prefix + key


def official_to_hf(flat: Arrays, spec: ViTSpec | None = None) -> dict[str, np.ndarray]:
    """Official-layout arrays → a Hugging Face ViT state dict (bit-exact, dtype kept).

    With a head: `ViTForImageClassification` names ("vit.*", "classifier.*"); without:
    `ViTModel` names, with the pre-logits layer as its pooler when there is one.

    Raises:
      CheckpointError: a bad key or shape, or a model HF cannot hold.
    """
    if spec is None:
        spec = spec_from_official(flat)
    check_hf_compatible(spec)
    timm = official_to_timm(flat, spec)
    prefix = "vit." if spec.num_classes else ""
    out: dict[str, np.ndarray] = {}
    for p in param_table(spec):
        parts = np.split(timm[p.timm_key], len(p.hf_keys))
        for key, part in zip(p.hf_keys, parts, strict=True):
            out[_hf_name(key, prefix)] = np.ascontiguousarray(part)
    return out


def hf_to_official(sd: Arrays, spec: ViTSpec) -> dict[str, np.ndarray]:
    """A Hugging Face `ViTModel`/`ViTForImageClassification` state dict → npz arrays.

    `ViTModel`'s pooler becomes the pre-logits layer (both are dense + tanh on the class
    token; `vit_core.hf_config` checks that its activation is tanh).

    Args:
      sd: the state dict (numpy arrays) as stored in `model.safetensors`.
      spec: its spec (`vit_core.hf_config.spec_from_hf`).

    Returns:
      {"/"-joined key: array} (bit-exact, dtype kept).

    Raises:
      CheckpointError: a missing, extra or mis-shaped key (named in the message).
    """
    check_hf_compatible(spec)
    prefix = hf_prefix(sd)
    table = param_table(spec)
    want = {}
    for p in table:
        part = (p.timm_shape[0] // len(p.hf_keys), *p.timm_shape[1:])
        want.update({_hf_name(k, prefix): part for k in p.hf_keys})
    check_keys(sd, want, "The Hugging Face state dict")
    timm = {p.timm_key: np.concatenate([np.asarray(sd[_hf_name(k, prefix)])
                                        for k in p.hf_keys]) for p in table}
    return timm_to_official(timm, spec)


def hf_weight_shapes(sd: Arrays) -> dict[str, int | None]:
    """The sizes a HF state dict stores, to cross-check its config.json.

    Returns:
      hidden_size, num_hidden_layers, intermediate_size, patch_size, num_channels,
      num_patches (position rows − 1), pooler_output_size (None without a pooler),
      num_labels (None without a classifier).

    Raises:
      CheckpointError: a key the sizes are read from is missing.
    """
    p = hf_prefix(sd)
    shapes = {k: shape_of(v) for k, v in sd.items()}
    what = "The Hugging Face state dict"
    proj = p + "embeddings.patch_embeddings.projection.weight"
    layers = {m.group(1) for m in map(re.compile(r"^(?:vit\.)?encoder\.layer\.(\d+)\.").match,
                                       shapes) if m}
    return {
        "hidden_size": _size(shapes, proj, 0, what),
        "num_channels": _size(shapes, proj, 1, what),
        "patch_size": _size(shapes, proj, 2, what),
        "num_hidden_layers": len(layers),
        "intermediate_size": _size(shapes, p + "encoder.layer.0.intermediate.dense.weight", 0,
                                   what),
        "num_patches": _size(shapes, p + "embeddings.position_embeddings", 1, what) - 1,
        "pooler_output_size": _size(shapes, p + "pooler.dense.weight", 0, what)
        if p + "pooler.dense.weight" in shapes else None,
        "num_labels": _size(shapes, "classifier.weight", 0, what)
        if "classifier.weight" in shapes else None,
    }

