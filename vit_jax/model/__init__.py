"""The Flax model, built from a `vit_core.spec.ViTSpec`; it knows nothing of files or data.

  vit.py        VisionTransformer, model_from_config, param_shapes
  attention.py  the attention kernels (softmax with its own backward, XLA, cuDNN)
  ops.py        LayerNorm and GELU with their own VJPs
  flops.py      analytic FLOPs of a forward and a train step
"""
