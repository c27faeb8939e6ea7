"""vit_torch: a PyTorch reference twin of the `vit_jax` Vision Transformer.

Same function as `vit_jax.models.VisionTransformer`, timm parameter names, and a bit-exact
converter to the official `.npz` layout (`vit_torch.convert`). Never imports jax or flax.
"""

from __future__ import annotations

from typing import Any

from vit_torch.model import VisionTransformer, create_model

__all__ = ["VisionTransformer", "create_model", "load_npz", "save_npz"]


def __getattr__(name: str) -> Any:
    # `load_npz`/`save_npz` are imported lazily: importing `vit_torch.convert` eagerly here
    # would make `python -m vit_torch.convert` warn that the module was already imported.
    if name in ("load_npz", "save_npz"):
        from vit_torch import convert

        return getattr(convert, name)
    raise AttributeError(f"module 'vit_torch' has no attribute {name!r}")
