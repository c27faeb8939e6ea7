"""The ViT variant table: one home for widths, depths, heads and MLP sizes.

Framework-free on purpose (no jax, no torch): `vit_jax.model.vit` and `vit_torch.model`
both read it, so the two models can never disagree on what "B/16" means.

Sources: Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words", Table 1 (Base,
Large, Huge); Steiner et al. 2021, "How to train your ViT?" (Tiny, Small), whose
configs are those of the released checkpoints.
"""

from __future__ import annotations

import dataclasses

from vit_core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Width:
    """Transformer size shared by all patch sizes of one model family."""

    hidden_size: int  # D, the token width
    num_layers: int  # encoder blocks
    num_heads: int  # attention heads (head_dim = hidden_size // num_heads)
    mlp_dim: int  # hidden width of the MLP block


# Model families: (D, depth, heads, MLP).
WIDTHS: dict[str, Width] = {
    "Ti": Width(hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768),
    "S": Width(hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "B": Width(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "L": Width(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
    "H": Width(hidden_size=1280, num_layers=32, num_heads=16, mlp_dim=5120),
    # Not a real model: small enough for unit tests to compile in seconds.
    "testing": Width(hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64),
}

# The released / paper variants: name -> (family, patch size).
VARIANTS: dict[str, tuple[str, int]] = {
    "Ti/16": ("Ti", 16),
    "S/16": ("S", 16),
    "S/32": ("S", 32),
    "B/8": ("B", 8),
    "B/16": ("B", 16),
    "B/32": ("B", 32),
    "L/16": ("L", 16),
    "L/32": ("L", 32),
    "H/14": ("H", 14),
    "testing": ("testing", 4),
}

# Hybrids (paper §3.1; the official `configs/models.py`): name -> (family, patch size on the
# ResNet's feature map, ResNet units per stage). The ResNet's root block divides by 4 and
# every stage after the first by 2 (`vit_core.spec.ViTSpec.resnet_stride`):
#   R50+B/16  (3, 4, 9): 4·2·2 = 16, 1×1 patches (the released R50+ViT-B_16);
#   R26+S/32, R50+L/32 (AugReg): four stages, 4·2·2·2 = 32, 1×1 patches;
#   R+Ti/16 (AugReg's R_Ti_16): the root block alone with 8×8 patches. The official config
#     says this makes "/16", but its root block (conv stride 2, max pool stride 2) divides
#     by 4, so the total stride is 32 (7×7 tokens at 224; timm's vit_tiny_r_s16_p8_224
#     agrees: 50 posemb rows).
HYBRIDS: dict[str, tuple[str, int, tuple[int, ...]]] = {
    "R+Ti/16": ("Ti", 8, ()),
    "R26+S/32": ("S", 1, (2, 2, 2, 2)),
    "R50+B/16": ("B", 1, (3, 4, 9)),
    "R50+L/32": ("L", 1, (3, 4, 6, 3)),
    # Not a real model: a root block, a stage without and a stage with a stride (stride 8),
    # for unit tests.
    "testing-hybrid": ("testing", 1, (2, 1)),
}


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """Everything a variant name fixes about the architecture."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    resnet_layers: tuple[int, ...] | None = None  # a hybrid's ResNet stages (HYBRIDS)
    resnet_width: int = 1


def decode_variant(name: str) -> VariantSpec:
    """Looks up a variant by name, e.g. ``"B/16"``.

    Args:
      name: one of ``VARIANTS`` (``"Ti/16"``, ..., ``"H/14"``, ``"testing"``) or of
        ``HYBRIDS`` (``"R50+B/16"``, ...).

    Returns:
      The variant's `VariantSpec`.

    Raises:
      ConfigError: the name is unknown; the message lists the known names.
    """
    if name in HYBRIDS:
        family, patch_size, layers = HYBRIDS[name]
        return VariantSpec(name=name, patch_size=patch_size, resnet_layers=layers,
                           **dataclasses.asdict(WIDTHS[family]))
    if name not in VARIANTS:
        known = ", ".join(repr(v) for v in (*VARIANTS, *HYBRIDS))
        raise ConfigError(f"Unknown ViT variant {name!r}. Known variants: {known}.")
    family, patch_size = VARIANTS[name]
    width = WIDTHS[family]
    return VariantSpec(name=name, patch_size=patch_size, **dataclasses.asdict(width))
