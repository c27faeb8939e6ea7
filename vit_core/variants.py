"""The ViT variant table: one home for widths, depths, heads and MLP sizes.

Framework-free on purpose (no jax, no torch): `vit_jax.models` and `vit_torch.model`
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


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """Everything a variant name fixes about the architecture."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    patch_size: int


def decode_variant(name: str) -> VariantSpec:
    """Looks up a variant by name, e.g. ``"B/16"``.

    Args:
      name: one of ``VARIANTS`` (``"Ti/16"``, ..., ``"H/14"``, ``"testing"``).

    Returns:
      The variant's `VariantSpec`.

    Raises:
      ConfigError: the name is unknown; the message lists the known names.
    """
    if name not in VARIANTS:
        known = ", ".join(repr(v) for v in VARIANTS)
        raise ConfigError(f"Unknown ViT variant {name!r}. Known variants: {known}.")
    family, patch_size = VARIANTS[name]
    width = WIDTHS[family]
    return VariantSpec(name=name, patch_size=patch_size, **dataclasses.asdict(width))
