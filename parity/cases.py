"""What the parity proof compares: one `Case` per configuration, and the case lists.

A leaf module (no parity imports): `parity.weights` builds a case's models and weights,
`parity.harness` and `parity.training` measure them, the tests and `python -m parity`
pick cases from the lists here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vit_core.spec import ViTSpec


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration compared across the two frameworks.

    Attributes:
      name: row label of the report and pytest id.
      variant: a `vit_core.variants` name.
      image_size: side of the square images.
      batch: images per batch (2 for the real variants: the suite runs on 2 CPU cores).
      options: `VisionTransformer` options both frameworks share (classifier, ...).
      scan: build the Flax model with `nn.scan` (a Flax-only layout; torch has none).
      train: also compare gradients and optimizer steps (kept to small models: time).
      num_classes: size of the head.
    """

    name: str
    variant: str
    image_size: int
    batch: int
    options: tuple[tuple[str, Any], ...] = ()
    scan: bool = False
    train: bool = False
    num_classes: int = 10

    @property
    def kwargs(self) -> dict[str, Any]:
        """The shared options as keyword arguments of both `create_model`s."""
        return dict(self.options)

    @property
    def spec(self) -> ViTSpec:
        """The architecture both frameworks build for this case."""
        return ViTSpec.from_variant(self.variant, image_size=self.image_size,
                                    num_classes=self.num_classes, **self.kwargs)


_EXACT, _GAP = (("gelu_approximate", False),), (("classifier", "gap"),)
_MAP, _SINCOS = (("classifier", "map"),), (("posemb", "sincos2d"),)
_REG = (("num_registers", 2),)
CASES: tuple[Case, ...] = (
    Case("testing", "testing", 32, 4, train=True),
    Case("testing/exact-gelu", "testing", 32, 4, _EXACT, train=True),
    Case("testing/gap", "testing", 32, 4, _GAP, train=True),
    Case("testing/rep", "testing", 32, 4, (("representation_size", 24),), train=True),
    Case("testing/scan", "testing", 32, 4, scan=True),
    # big_vision's options: the fixed sin-cos posemb (class token without position) and
    # the MAP head (no class token), alone and together.
    Case("testing/sincos2d", "testing", 32, 4, _SINCOS, train=True),
    Case("testing/gap-sincos2d", "testing", 32, 4, (*_GAP, *_SINCOS)),
    Case("testing/map", "testing", 32, 4, _MAP, train=True),
    Case("testing/map-sincos2d", "testing", 32, 4, (*_MAP, *_SINCOS), train=True),
    # Options added through the core spec: register tokens (timm's reg_tokens), with each
    # pooling, and Hugging Face's LayerNorm epsilon.
    Case("testing/registers", "testing", 32, 4, _REG, train=True),
    Case("testing/gap-registers", "testing", 32, 4, (*_GAP, *_REG), train=True),
    Case("testing/map-registers-sincos2d", "testing", 32, 4, (*_MAP, *_REG, *_SINCOS)),
    Case("testing/ln-eps-1e-12", "testing", 32, 4, (("layer_norm_eps", 1e-12),), train=True),
    # Hybrids (paper §3.1): a ResNet (StdConv, GroupNorm, max pool, projections) before the
    # patch embedding; 1×1 patches on the feature map, and 2×2 ones.
    Case("testing-hybrid", "testing-hybrid", 32, 4, train=True),
    Case("testing-hybrid/p2-gap", "testing-hybrid", 32, 4, (("patch_size", 2), *_GAP),
         train=True),
    Case("Ti/16", "Ti/16", 224, 2, train=True, num_classes=1000),
    Case("Ti/16/exact-gelu", "Ti/16", 224, 2, _EXACT, num_classes=1000),
    Case("S/16", "S/16", 224, 2, num_classes=1000),
    Case("S/16/gap", "S/16", 224, 2, _GAP, num_classes=1000),
    Case("B/16", "B/16", 224, 2, num_classes=1000),
    Case("B/32", "B/32", 224, 2, num_classes=1000),
    # The released ImageNet-21k models' head: a tanh pre-logits layer as wide as the model.
    Case("S/32/rep", "S/32", 224, 2, (("representation_size", 384),), num_classes=1000),
    # big_vision's ImageNet-1k S/16 baseline (gap + sincos2d) and a MAP-head model.
    Case("S/16/gap-sincos2d", "S/16", 224, 2, (*_GAP, *_SINCOS), num_classes=1000),
    Case("Ti/16/map", "Ti/16", 224, 2, _MAP, num_classes=1000),
    # AugReg's R+Ti/16: the root block alone, 8×8 patches on its stride-4 map.
    Case("R+Ti/16", "R+Ti/16", 224, 2, num_classes=1000),
)
CASES_BY_NAME = {c.name: c for c in CASES}
# Position-embedding resize 224 → 384: a class-token model and a "gap" one (no prefix).
RESIZE_CASES = (CASES_BY_NAME["Ti/16"], Case("testing-p16/gap", "testing", 224, 2,
                                             (("patch_size", 16), *_GAP)))
BF16_CASES = (CASES_BY_NAME["testing"], CASES_BY_NAME["Ti/16"])
RESIZE_TO = 384
