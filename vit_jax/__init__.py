"""vit-jax: the Vision Transformer (Dosovitskiy et al., 2020) in JAX/Flax.

Importing the package is cheap and framework-free; import the submodules you need
(`vit_jax.models`, `vit_jax.checkpoint`, `vit_jax.train`, ...).
"""

__version__ = "0.1.0"
