"""One description of a ViT: `ViTSpec`, the architecture both frameworks build.

A spec holds what fixes the function a ViT computes and the parameters it stores: the
sizes (from the variant table, `vit_core.variants`), the image size the learned position
embedding is made for, the head, and the options (classifier, posemb, registers, LayerNorm
epsilon, GELU form). It does not hold how a run trains (dropout, dtype, remat, scan,
attention kernel): those are options of the models and configs.

Every consumer derives from it: `vit_jax.model.vit` and `vit_torch.model` build their modules
from a spec, `vit_core.params` lists every parameter's key and shape as a function of it,
the converters read a spec off a checkpoint's shapes (`vit_core.params.spec_from_official`)
and write it as JSON beside every export (`to_json` / `from_json`).

Adding an architecture option: a field here (with its check in `validate`), its parameters
in `vit_core.params`, its use in the two model modules, and their tests.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from vit_core.errors import ConfigError
from vit_core.variants import decode_variant

CLASSIFIERS = ("token", "gap", "map")
POSEMBS = ("learn", "sincos2d")
# The official code and timm's ViTs; Hugging Face's ViT configs say 1e-12.
DEFAULT_LAYER_NORM_EPS = 1e-6
# A hybrid's ResNet (the official `models_resnet.py`): the root block (7×7 stride-2 conv +
# 3×3 stride-2 max pool) divides by 4, each stage after the first by 2 more.
RESNET_ROOT_STRIDE = 4
RESNET_ROOT_WIDTH = 64  # channels of the root conv at resnet_width=1
GROUPNORM_GROUPS = 32  # flax nn.GroupNorm's default, as the official ResNet uses it


@dataclasses.dataclass(frozen=True)
class ViTSpec:
    """The architecture of one ViT (hashable: a Flax module field).

    Attributes:
      patch_size: side P of the square patches.
      hidden_size: D, the token width.
      num_layers: encoder blocks.
      num_heads: K attention heads (head_dim = D / K).
      mlp_dim: hidden width of each block's MLP.
      image_size: (H, W) the learned position embedding is made for; images must be
        multiples of P (a "sincos2d" model takes any size).
      num_classes: outputs of the head; 0 means no head (pre-logits features).
      classifier: "token" (class token, the paper's), "gap" (mean of the patch tokens after
        the final norm) or "map" (big_vision's attention pooling over the patch tokens).
        Only "token" has a class token.
      posemb: "learn" (a learned (1, prefix + N, D) embedding: the released weights) or
        "sincos2d" (big_vision's fixed table on the patch tokens; no parameter).
      representation_size: width of a Dense+tanh "pre_logits" layer before the head
        (the released ImageNet-21k models); None: no such layer.
      num_registers: learned register tokens after the class token ("Vision Transformers
        Need Registers", Darcet et al. 2023; timm's `reg_tokens`), dropped by the pooling.
      layer_norm_eps: epsilon of every LayerNorm (1e-6 official and timm; HF says 1e-12).
      gelu_approximate: True = tanh GELU (the official code and released weights), False =
        the exact erf GELU (timm, Hugging Face).
      resnet_layers: a hybrid's ResNet (paper §3.1; the official `config.resnet.num_layers`):
        bottleneck units per stage, e.g. (3, 4, 9) for R50+ViT-B/16; () is the root block
        alone (AugReg's R+Ti/16); None: a plain ViT (patches of the image).
      resnet_width: the ResNet's width factor (`config.resnet.width_factor`): the root conv
        has 64·w channels, stage i's units 64·w·2^i (4× that out of each unit).
      variant: the variant name it came from ("B/16"), a label only (not compared).

    With a ResNet, `patch_size` is the patch on its feature map (1 for R50+B/16) and
    `total_stride` (ResNet stride × patch) the image pixels per token side.
    """

    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    image_size: tuple[int, int] = (224, 224)
    num_classes: int = 1000
    classifier: str = "token"
    posemb: str = "learn"
    representation_size: int | None = None
    num_registers: int = 0
    layer_norm_eps: float = DEFAULT_LAYER_NORM_EPS
    gelu_approximate: bool = True
    resnet_layers: tuple[int, ...] | None = None
    resnet_width: int = 1
    variant: str | None = dataclasses.field(default=None, compare=False)

    # ----------------------------------------------------------------- derived sizes
    @property
    def head_dim(self) -> int:
        """Dh = D / K."""
        return self.hidden_size // self.num_heads

    @property
    def is_hybrid(self) -> bool:
        """A ResNet before the patch embedding (paper §3.1)."""
        return self.resnet_layers is not None

    @property
    def resnet_stride(self) -> int:
        """Image pixels per feature-map pixel of the ResNet (1 without one)."""
        if self.resnet_layers is None:
            return 1
        return RESNET_ROOT_STRIDE * 2 ** max(len(self.resnet_layers) - 1, 0)

    @property
    def resnet_channels(self) -> int:
        """Channels of the ResNet's feature map (what the patch embedding reads); 3 without."""
        if self.resnet_layers is None:
            return 3
        width = RESNET_ROOT_WIDTH * self.resnet_width
        if not self.resnet_layers:
            return width  # the root block alone
        return 4 * width * 2 ** (len(self.resnet_layers) - 1)

    @property
    def total_stride(self) -> int:
        """Image pixels per token side: the ResNet's stride times the patch size."""
        return self.resnet_stride * self.patch_size

    @property
    def grid(self) -> tuple[int, int]:
        """The (rows, columns) patch grid of `image_size`."""
        s = self.total_stride
        return (self.image_size[0] // s, self.image_size[1] // s)

    @property
    def num_patches(self) -> int:
        """N, the patch tokens of `image_size`."""
        return self.grid[0] * self.grid[1]

    @property
    def has_class_token(self) -> bool:
        return self.classifier == "token"

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token, then the registers."""
        return int(self.has_class_token) + self.num_registers

    @property
    def pooled_width(self) -> int:
        """Width of the pooled features the head reads (pre-logits layer or D)."""
        return self.representation_size or self.hidden_size

    # --------------------------------------------------------------------- checking
    def validate(self) -> ViTSpec:
        """Checks that the spec describes a buildable ViT.

        Returns:
          The spec itself, for chaining.

        Raises:
          ConfigError: one line naming the field, its value and what it must be.
        """
        positive = ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"ViT {name} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_heads "
                              f"{self.num_heads}.")
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ConfigError(f"image_size must be (height, width) > 0, got {self.image_size!r}.")
        if self.resnet_layers is not None:
            layers = self.resnet_layers
            if not isinstance(layers, tuple) or any(
                    not isinstance(n, int) or isinstance(n, bool) or n <= 0 for n in layers):
                raise ConfigError(f"resnet_layers must be a tuple of positive unit counts per "
                                  f"stage (or None: no ResNet), got {layers!r}.")
        if (not isinstance(self.resnet_width, int) or isinstance(self.resnet_width, bool)
                or self.resnet_width <= 0):
            raise ConfigError(f"resnet_width must be a positive integer, got "
                              f"{self.resnet_width!r}.")
        h, w = self.image_size
        s = self.total_stride
        if h % s or w % s:
            what = (f"the total stride {s} (ResNet stride {self.resnet_stride} × patch size "
                    f"{self.patch_size})" if self.is_hybrid else f"the patch size {s}")
            fit = (max(1, round(h / s)) * s, max(1, round(w / s)) * s)
            raise ConfigError(f"Image size {h}x{w} is not divisible by {what} "
                              "(config.image_size; config.model.patch_size or that of the "
                              f"variant); e.g. use image size {fit[0]}x{fit[1]}.")
        if self.classifier not in CLASSIFIERS:
            raise ConfigError(f"classifier must be one of {CLASSIFIERS}, got "
                              f"{self.classifier!r} (config.model.classifier).")
        if self.posemb not in POSEMBS:
            raise ConfigError(f"posemb must be one of {POSEMBS}, got {self.posemb!r} "
                              "(config.model.posemb).")
        if self.posemb == "sincos2d" and (self.hidden_size % 4 or self.hidden_size < 8):
            raise ConfigError(f"posemb='sincos2d' needs a hidden_size that is a multiple of 4 "
                              f"(and ≥ 8), got {self.hidden_size}; use posemb='learn'.")
        if self.num_classes < 0:
            raise ConfigError(f"num_classes must be ≥ 0 (0: no head), got {self.num_classes}.")
        if self.representation_size is not None and self.representation_size <= 0:
            raise ConfigError("representation_size must be positive or None, got "
                              f"{self.representation_size}.")
        if self.num_registers < 0:
            raise ConfigError(f"num_registers must be ≥ 0, got {self.num_registers}.")
        if not (0.0 < self.layer_norm_eps < 1.0):
            raise ConfigError(f"layer_norm_eps must be in (0, 1), got {self.layer_norm_eps}.")
        return self

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_variant(cls, variant: str, **options: Any) -> ViTSpec:
        """The spec of a named variant ("B/16", "testing", ...) with options changed.

        Args:
          variant: a name of `vit_core.variants.VARIANTS`.
          **options: any other field, including the variant's own sizes (patch_size=8) and
            image_size as an int (square) or (H, W).

        Returns:
          The validated spec.

        Raises:
          ConfigError: an unknown variant, an unknown option or a bad value.
        """
        base = decode_variant(variant)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ConfigError(f"Unknown ViT option(s) {unknown}; known: {sorted(fields)}.")
        values: dict[str, Any] = dict(
            patch_size=base.patch_size, hidden_size=base.hidden_size,
            num_layers=base.num_layers, num_heads=base.num_heads, mlp_dim=base.mlp_dim,
            variant=variant,
        )
        if base.resnet_layers is not None:
            values.update(resnet_layers=base.resnet_layers, resnet_width=base.resnet_width)
        values.update({k: v for k, v in options.items() if v is not None or k in _NULLABLE})
        values["image_size"] = _pair(values.get("image_size", (224, 224)))
        if values.get("resnet_layers") is not None:
            values["resnet_layers"] = _layers(values["resnet_layers"])
        return cls(**values).validate()

    def replace(self, **changes: Any) -> ViTSpec:
        """A validated copy with some fields changed (image_size may be an int)."""
        if "image_size" in changes:
            changes["image_size"] = _pair(changes["image_size"])
        if changes.get("resnet_layers") is not None:
            changes["resnet_layers"] = _layers(changes["resnet_layers"])
        return dataclasses.replace(self, **changes).validate()

    # ------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values (image_size as a list)."""
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        if self.resnet_layers is not None:
            out["resnet_layers"] = list(self.resnet_layers)
        return out

    def to_json(self) -> str:
        """The spec as a JSON object (`from_json` reads it back)."""
        return json.dumps({"vit_spec": self.to_dict()}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ViTSpec:
        """Reads `to_json`'s output.

        Raises:
          ConfigError: not JSON, not a spec, an unknown field or a bad value.
        """
        try:
            data = json.loads(text)["vit_spec"]
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"Not a ViT spec JSON ({type(e).__name__}: {e}).") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ViTSpec:
        """A spec from `to_dict`'s output (missing optional fields take their defaults)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"Unknown ViT spec field(s) {unknown}; known: {sorted(fields)}.")
        values = dict(data)
        if "image_size" in values:
            values["image_size"] = _pair(values["image_size"])
        if values.get("resnet_layers") is not None:
            values["resnet_layers"] = _layers(values["resnet_layers"])
        try:
            return cls(**values).validate()
        except TypeError as e:  # a required size is missing
            raise ConfigError(f"Incomplete ViT spec: {e}.") from None


# Fields whose None is a value (not "keep the variant's").
_NULLABLE = frozenset({"representation_size"})


def _layers(layers: Any) -> tuple[int, ...]:
    """A list (JSON, a config) of units per stage → the hashable tuple a spec holds."""
    try:
        return tuple(layers)
    except TypeError:
        raise ConfigError(f"resnet_layers must be a sequence of unit counts, got "
                          f"{layers!r}.") from None


def _pair(size: Any) -> tuple[int, int]:
    """An int (square) or a (H, W) sequence → (H, W)."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def spec_from_config(
    model_config: Mapping[str, Any], *, image_size: Any, num_classes: int
) -> ViTSpec:
    """The spec a config describes: `config.model` plus the data's image size and classes.

    Args:
      model_config: the architecture fields of `config.model` (a ConfigDict or mapping;
        the caller leaves out the model's run settings such as dropout and dtype):
        `variant` names the sizes; a size set to None keeps the variant's.
      image_size: `config.image_size` (int or (H, W)).
      num_classes: the dataset's classes (0 for no head).

    Returns:
      The validated spec.
    """
    options = dict(model_config.items())
    variant = options.pop("variant")
    return ViTSpec.from_variant(variant, image_size=image_size, num_classes=num_classes,
                                **options)


def square_grid(num_patches: int) -> tuple[int, int]:
    """The most square (rows ≥ columns) grid of `num_patches` patches.

    A checkpoint stores only the count of a learned position embedding; square grids are
    exact, and a non-square one (trained at, say, 48×32) needs its image size from the user
    to be resized: only the count matters to load it.
    """
    side = math.isqrt(num_patches)
    while num_patches % side:
        side -= 1
    return (num_patches // side, side)
