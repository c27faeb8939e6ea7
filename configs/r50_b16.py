"""Fine-tune the released hybrid R50+ViT-B/16 (.npz) at 384² on ImageNet-1k (or any tfds set).

  python -m vit_jax.train --config configs/r50_b16.py --workdir runs/r50_b16_ft \
      --config.init_checkpoint=/path/to/R50+ViT-B_16.npz --config.data_dir=/path/to/tfds

The hybrid of Dosovitskiy et al. 2020 §3.1: a ResNet-50-style backbone with (3, 4, 9) units
(total stride 16) feeding 1×1 patches of its feature map to ViT-B. The recipe is that of
configs/b16_finetune.py (Appendix B.1.1: SGD momentum 0.9, batch 512, clipping at 1,
cosine decay, 384² fine-tuning); the position embedding is resized from 14×14 to 24×24
tokens exactly as for a plain ViT (the grid is the spec's: image size / total stride).

The argument (after ":") "runlocal" shrinks everything (the "testing-hybrid" model, 32²
images, batch 8, 2 steps, no checkpoint to load) for tests and a smoke run.
"""

import ml_collections

from configs import b16_finetune
from vit_core.errors import ConfigError

ARGS = ("runlocal",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the R50+ViT-B/16 fine-tuning config.

    Args:
      arg: "" or "runlocal" (see the module docstring).
    """
    args = set(filter(None, (arg or "").split(",")))
    if args - set(ARGS):
        raise ConfigError(f"Unknown config argument(s) {sorted(args - set(ARGS))}; known: {ARGS}.")
    config = b16_finetune.get_config()
    config.model.variant = "R50+B/16"
    config.init_checkpoint = "R50+ViT-B_16.npz"  # a released checkpoint; override the path
    if "runlocal" in args:
        config.model.variant = "testing-hybrid"
        config.model.dtype = "float32"
        config.init_checkpoint = ""
        config.reinit_head = False
        config.augment = "none"
        config.image_size, config.batch_size, config.eval_batch_size = 32, 8, 8
        config.num_train_steps, config.warmup_steps = 2, 1
        config.log_every_steps = config.checkpoint_every_steps = 1
        config.eval_every_steps = 0
    return config
