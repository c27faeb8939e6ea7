"""vit_core: what the Flax model and its PyTorch twin share, in plain numpy.

The error classes of every command (`errors`), the variant table (`variants`), position
embeddings (`posemb`) and the official `.npz` file (`npz`). Imports no jax, flax, torch
or tensorflow: `vit_jax` and `vit_torch` both build on it, and neither on the other.
"""
