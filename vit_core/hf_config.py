"""Hugging Face ViT configs (`config.json`) ⇄ `ViTSpec`.

The weights' names are in the parameter table (`vit_core.params`, HF names) and their
conversion in `vit_core.layouts`; this module holds what HF keeps beside them: the sizes
(cross-checked against the weights), the activation, the LayerNorm epsilon, the pooler and
the class names. Plain JSON: no transformers import.

- `hidden_act`: the official Flax code uses the tanh approximation, "gelu_pytorch_tanh" in
  HF (`gelu_approximate=True`); "gelu" is the exact erf GELU. HF's own ports of the
  released ViTs say "gelu".
- `layer_norm_eps`: HF's default is 1e-12, the official code's 1e-6; the spec carries it,
  so both convert exactly.
- the pooler: HF `ViTModel`'s dense + tanh on the class token is the official `pre_logits`
  layer (`representation_size`); `ViTForImageClassification` has none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from vit_core.errors import CheckpointError, ConfigError
from vit_core.layouts import check_hf_compatible, hf_weight_shapes
from vit_core.spec import ViTSpec

EXACT_GELU = ("gelu", "gelu_python")
TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_python_tanh")
# transformers' ViTConfig defaults, for fields a config.json leaves out.
DEFAULTS = {"hidden_act": "gelu", "layer_norm_eps": 1e-12, "qkv_bias": True,
            "pooler_act": "tanh", "num_attention_heads": 12, "image_size": 224,
            "patch_size": 16, "num_channels": 3}
# Far above any ViT (ViT-22B has 48); a config above it is not a ViT's.
MAX_HEADS = 4096


def make_config(spec: ViTSpec, *, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """The `config.json` of the HF model that holds a model of `spec`.

    Args:
      spec: the model (it must fit HF: `vit_core.layouts.check_hf_compatible`).
      labels: class names by index; HF's placeholders if None.

    Returns:
      The config as a dict: `ViTForImageClassification` with a head, `ViTModel` without
      (its pooler holds the pre-logits layer, if any).

    Raises:
      CheckpointError: a model HF cannot hold, or a non-square image size.
      ConfigError: as many labels as classes are needed, each name once.
    """
    check_hf_compatible(spec)
    h, w = spec.image_size
    if h != w:
        raise CheckpointError(f"The model is for {h}x{w} images; HF's ViT config has a square "
                              "image_size only.")
    config: dict[str, Any] = {
        "architectures": ["ViTForImageClassification" if spec.num_classes else "ViTModel"],
        "model_type": "vit",
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "intermediate_size": spec.mlp_dim,
        "hidden_act": TANH_GELU[0] if spec.gelu_approximate else EXACT_GELU[0],
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": spec.layer_norm_eps,
        "image_size": h,
        "patch_size": spec.patch_size,
        "num_channels": 3,
        "qkv_bias": True,
        "encoder_stride": spec.patch_size,
        "pooler_output_size": spec.pooled_width,
        "pooler_act": "tanh",
    }
    if spec.num_classes:
        names = list(labels) if labels is not None else [f"LABEL_{i}"
                                                         for i in range(spec.num_classes)]
        if len(names) != spec.num_classes or len(set(names)) != len(names):
            raise ConfigError(f"The head has {spec.num_classes} classes but {len(names)} labels "
                              f"({len(set(names))} distinct) were given; give one name each.")
        config["id2label"] = {str(i): name for i, name in enumerate(names)}
        config["label2id"] = {name: i for i, name in enumerate(names)}
    return config


def _get(config: Mapping[str, Any], field: str) -> Any:
    return config.get(field, DEFAULTS.get(field))


def _same(value: Any) -> Any:
    """[224, 224] → 224 (HF allows a pair for square sizes); anything else unchanged."""
    if isinstance(value, list | tuple) and value and all(v == value[0] for v in value):
        return value[0]
    return value


def labels_of(config: Mapping[str, Any]) -> list[str] | None:
    """The class names of `id2label` by index, or None for HF's placeholders."""
    id2label = config.get("id2label") or {}
    if not isinstance(id2label, Mapping):
        raise CheckpointError(f"config.json's id2label is a {type(id2label).__name__}, not an "
                              "object {index: class name}.")
    labels = [str(id2label.get(str(i), id2label.get(i))) for i in range(len(id2label))]
    if not labels or labels == [f"LABEL_{i}" for i in range(len(labels))]:
        return None
    return labels


def spec_from_hf(config: Mapping[str, Any], weights: Mapping[str, Any]) -> ViTSpec:
    """Reads and checks a HF ViT `config.json` against the weights beside it.

    Args:
      config: the parsed JSON.
      weights: the state dict (arrays or anything with a shape), to cross-check the sizes.

    Returns:
      The spec of the model (LayerNorm epsilon and GELU form from the config).

    Raises:
      CheckpointError: not a ViT (e.g. DeiT, whose distillation token has no counterpart),
        q/k/v without biases, an activation other than GELU, a field that disagrees with
        the weights (named, both values), or a pooler whose activation is not tanh.
    """
    if not isinstance(config, Mapping):
        raise CheckpointError("config.json is not a JSON object.")
    if config.get("model_type") != "vit":
        raise CheckpointError(f"config.json has model_type {config.get('model_type')!r}; only "
                              "Hugging Face ViT ('vit') checkpoints convert to the ViT layout.")
    if not _get(config, "qkv_bias"):
        raise CheckpointError("config.json has qkv_bias=false; the official ViT layout has "
                              "query/key/value biases (HF's ViT checkpoints all do).")
    act = _get(config, "hidden_act")
    if act not in EXACT_GELU + TANH_GELU:
        raise CheckpointError(f"config.json has hidden_act {act!r}; the ViT models here use "
                              f"GELU: one of {', '.join(EXACT_GELU + TANH_GELU)}.")
    eps = _get(config, "layer_norm_eps")
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 < eps < 1:
        raise CheckpointError(f"config.json has layer_norm_eps={eps!r}; expected a small "
                              "positive number (e.g. 1e-12).")
    heads = _get(config, "num_attention_heads")  # the one size the weights do not show
    if not isinstance(heads, int) or isinstance(heads, bool) or not 1 <= heads <= MAX_HEADS:
        raise CheckpointError(f"config.json has num_attention_heads={heads!r}; expected a whole "
                              f"number from 1 to {MAX_HEADS}.")
    got = hf_weight_shapes(weights)
    side = math.isqrt(got["num_patches"])
    got["image_size"] = side * got["patch_size"] if side * side == got["num_patches"] else None
    compared = ["hidden_size", "num_hidden_layers", "intermediate_size", "patch_size",
                "num_channels", "image_size"]
    if got["pooler_output_size"] is not None:
        compared.append("pooler_output_size")
    for field in compared:
        # A field left out means transformers' default (the pooler's: the hidden size).
        default = got["hidden_size"] if field == "pooler_output_size" else got[field]
        said = _same(config.get(field, DEFAULTS.get(field, default)))
        if said != got[field]:
            have = (f"a non-square grid of {got['num_patches']} patches"
                    if got[field] is None else repr(got[field]))
            raise CheckpointError(f"config.json says {field}={said!r} but the weights have "
                                  f"{have}.")
    if got["pooler_output_size"] is not None and _get(config, "pooler_act") != "tanh":
        raise CheckpointError(f"config.json has pooler_act {_get(config, 'pooler_act')!r}; "
                              "only a tanh pooler is the official pre-logits layer.")
    try:
        return ViTSpec(
            patch_size=got["patch_size"], hidden_size=got["hidden_size"],
            num_layers=got["num_hidden_layers"], num_heads=heads,
            mlp_dim=got["intermediate_size"], image_size=(got["image_size"],) * 2,
            num_classes=got["num_labels"] or 0, classifier="token", posemb="learn",
            representation_size=got["pooler_output_size"], layer_norm_eps=float(eps),
            gelu_approximate=act in TANH_GELU,
        ).validate()
    except ConfigError as e:
        raise CheckpointError(f"config.json describes no valid ViT: {e}") from None
