"""vit_torch: a PyTorch reference twin of the `vit_jax` Vision Transformer.

Same function as `vit_jax.models.VisionTransformer`, with timm parameter names
(`vit_torch.model`); a bit-exact converter between the official `.npz` layout, timm state
dicts and Hugging Face checkpoints (`vit_torch.convert`: the key map; `vit_torch.hf`: HF
configs; `vit_torch.files`: the files); the command line `python -m vit_torch IN OUT`.
Never imports jax or flax. Import each name from the module that defines it.
"""
