"""ViT-Ti/16 from scratch on ImageNet-1k: the b16 recipe with a smaller model.

  python -m vit_jax.train --config configs/ti16.py --workdir runs/ti16 \
      --config.data_dir=/path/to/tensorflow_datasets

Same optimiser and schedule as configs/b16.py (the paper's ImageNet recipe); Ti and S
are the AugReg sizes (Steiner et al. 2021), whose released checkpoints use this layout.
"""

import ml_collections

from configs import b16


def get_config() -> ml_collections.ConfigDict:
    """Returns the ViT-Ti/16 config."""
    config = b16.get_config()
    config.model.variant = "Ti/16"
    return config
