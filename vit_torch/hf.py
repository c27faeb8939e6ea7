"""Hugging Face ViT configs (`config.json`) ⇄ the sizes and options of an npz checkpoint.

The weights' names are in the one key map, `vit_torch.convert.key_map`; this module holds
what HF keeps beside them: the sizes (cross-checked against the weights), the activation,
the LayerNorm epsilon, the pooler and the class names. Plain JSON: no transformers import.

Facts that the npz layout does not store, and how they are set:
- `hidden_act`: the official Flax code (and vit_jax/vit_torch by default) uses the tanh
  approximation, "gelu_pytorch_tanh" in HF; "gelu" is the exact erf GELU
  (`gelu_approximate=False`). HF's own ports of the released ViTs say "gelu".
- `layer_norm_eps`: 1e-6 in the official code and here; HF's default is 1e-12.
- the pooler: HF `ViTModel`'s dense + tanh on the class token is the official
  `pre_logits` layer (`representation_size`); `ViTForImageClassification` has none.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from vit_core.errors import CheckpointError, ConfigError
from vit_torch.convert import Dims, check_hf_compatible
from vit_torch.model import LAYER_NORM_EPS

EXACT_GELU = ("gelu", "gelu_python")
TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_python_tanh")
# transformers' ViTConfig defaults, for fields a config.json leaves out.
_DEFAULTS = {"hidden_act": "gelu", "layer_norm_eps": 1e-12, "qkv_bias": True,
             "pooler_act": "tanh", "num_attention_heads": 12, "image_size": 224,
             "patch_size": 16, "num_channels": 3}
_MAX_HEADS = 4096  # far above any ViT (ViT-22B has 48); a config above it is not a ViT's


@dataclasses.dataclass(frozen=True)
class HfOptions:
    """What a HF config says beyond the weights' shapes.

    Attributes:
      num_heads: `num_attention_heads`.
      gelu_approximate: True for a tanh GELU, False for the exact one.
      layer_norm_eps: HF's epsilon (the npz models use 1e-6).
      labels: class names by index, or None for HF's placeholders ("LABEL_0", ...).
    """

    num_heads: int
    gelu_approximate: bool
    layer_norm_eps: float
    labels: list[str] | None


def make_config(dims: Dims, *, gelu_approximate: bool = True,
                labels: Sequence[str] | None = None) -> dict[str, Any]:
    """The `config.json` of the HF model that holds an npz checkpoint of `dims`.

    Args:
      dims: the npz's sizes (`vit_torch.convert.npz_dims`).
      gelu_approximate: the activation the weights were made with (tanh by default).
      labels: class names by index; HF's placeholders if None.

    Returns:
      The config as a dict: `ViTForImageClassification` with a head, `ViTModel` without
      (its pooler holds the pre-logits layer, if any).

    Raises:
      CheckpointError: a model HF cannot hold, or a non-square patch grid.
      ConfigError: as many labels as classes are needed, each name once.
    """
    check_hf_compatible(dims)
    side = math.isqrt(dims.tokens - 1)
    if side * side != dims.tokens - 1:
        raise CheckpointError(f"The position embedding has {dims.tokens - 1} patch rows, not a "
                              "square grid; HF's ViT config has a square image_size only.")
    config: dict[str, Any] = {
        "architectures": ["ViTForImageClassification" if dims.classes is not None
                          else "ViTModel"],
        "model_type": "vit",
        "hidden_size": dims.width,
        "num_hidden_layers": dims.layers,
        "num_attention_heads": dims.heads,
        "intermediate_size": dims.mlp,
        "hidden_act": TANH_GELU[0] if gelu_approximate else EXACT_GELU[0],
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": LAYER_NORM_EPS,
        "image_size": side * dims.patch,
        "patch_size": dims.patch,
        "num_channels": dims.channels,
        "qkv_bias": True,
        "encoder_stride": dims.patch,
        "pooler_output_size": dims.rep if dims.rep is not None else dims.width,
        "pooler_act": "tanh",
    }
    if dims.classes is not None:
        names = list(labels) if labels is not None else [f"LABEL_{i}"
                                                         for i in range(dims.classes)]
        if len(names) != dims.classes or len(set(names)) != len(names):
            raise ConfigError(f"The head has {dims.classes} classes but {len(names)} labels "
                              f"({len(set(names))} distinct) were given; give one name each.")
        config["id2label"] = {str(i): name for i, name in enumerate(names)}
        config["label2id"] = {name: i for i, name in enumerate(names)}
    return config


def _get(config: Mapping[str, Any], field: str) -> Any:
    return config.get(field, _DEFAULTS.get(field))


def read_config(config: Mapping[str, Any]) -> HfOptions:
    """Reads and checks the options of a HF ViT `config.json`.

    Args:
      config: the parsed JSON.

    Returns:
      The options the npz layout does not store.

    Raises:
      CheckpointError: not a ViT (e.g. DeiT, whose distillation token has no counterpart),
        q/k/v without biases, or an activation other than GELU.
    """
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
    id2label = config.get("id2label") or {}
    if not isinstance(id2label, dict):
        raise CheckpointError(f"config.json's id2label is a {type(id2label).__name__}, not an "
                              "object {index: class name}.")
    labels = [str(id2label.get(str(i), id2label.get(i))) for i in range(len(id2label))]
    if labels == [f"LABEL_{i}" for i in range(len(labels))] or not labels:
        labels = None  # HF's placeholders: no class names
    heads = _get(config, "num_attention_heads")
    # bool is an int in Python; the weights' widths bound the rest (check_config).
    if not isinstance(heads, int) or isinstance(heads, bool) or not 1 <= heads <= _MAX_HEADS:
        raise CheckpointError(f"config.json has num_attention_heads={heads!r}; expected a whole "
                              f"number from 1 to {_MAX_HEADS}.")
    eps = _get(config, "layer_norm_eps")
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 < eps < 1:
        raise CheckpointError(f"config.json has layer_norm_eps={eps!r}; expected a small "
                              "positive number (e.g. 1e-12).")
    return HfOptions(num_heads=heads, gelu_approximate=act in TANH_GELU,
                     layer_norm_eps=float(eps), labels=labels)


def check_config(config: Mapping[str, Any], dims: Dims) -> None:
    """Checks that a HF config describes the weights beside it.

    Args:
      config: the parsed `config.json`.
      dims: the sizes read off the weights (`vit_torch.convert.hf_dims`).

    Raises:
      CheckpointError: a field that disagrees with the weights (named, both values), or
        a pooler whose activation is not tanh (the pre-logits layer's).
    """
    side = math.isqrt(dims.tokens - 1)
    image_size = _get(config, "image_size")
    fields = {
        "hidden_size": dims.width, "num_hidden_layers": dims.layers,
        "intermediate_size": dims.mlp, "patch_size": dims.patch,
        "num_channels": dims.channels,
        "image_size": side * dims.patch if side * side == dims.tokens - 1 else None,
    }
    if dims.rep is not None:
        fields["pooler_output_size"] = dims.rep
    for field, want in fields.items():
        # A field left out means transformers' default (not the weights' value).
        got = image_size if field == "image_size" else config.get(field, _DEFAULTS.get(field, want))
        if isinstance(got, list | tuple) and got and all(g == got[0] for g in got):
            got = got[0]  # [224, 224]
        if got != want:
            raise CheckpointError(f"config.json says {field}={got!r} but the weights have "
                                  f"{want!r}.")
    if dims.rep is not None and _get(config, "pooler_act") != "tanh":
        raise CheckpointError(f"config.json has pooler_act {_get(config, 'pooler_act')!r}; "
                              "only a tanh pooler is the official pre-logits layer.")
