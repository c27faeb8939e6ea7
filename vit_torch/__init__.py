"""vit_torch: a PyTorch reference twin of the `vit_jax` Vision Transformer.

Same function as `vit_jax.model.vit.VisionTransformer`, built from the same
`vit_core.spec.ViTSpec`, with timm parameter names (`vit_torch.model`); tensors ⇄ the
official `.npz` layout through the core's key maps (`vit_torch.convert`); `.pt`,
`.safetensors` and Hugging Face directories (`vit_torch.files`); the command line
`python -m vit_torch IN OUT`. Never imports jax, flax or vit_jax. Import each name from the
module that defines it.
"""
