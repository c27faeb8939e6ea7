"""The quick start: a small ViT trained from scratch on scikit-learn's digits (CPU, minutes).

  python -m vit_jax.train --config configs/digits.py --workdir runs/digits

1,797 real 8×8 handwritten digits ship with scikit-learn, so nothing is downloaded; the
tfds builder `vit_jax/data/digits.py` prepares them on first use with a fixed,
stratified held-out test split (20%) and a validation split (10% of the rest) used for
every choice below. The test accuracy is printed at the end and kept in metrics.json.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the digits quick-start config."""
    config = default.get_config()
    config.model.variant = "testing"
    config.model.patch_size = 4
    config.model.dropout_rate = 0.0
    config.dataset = "digits"
    config.image_size = 16  # the 8x8 digits upsampled: 4x4 = 16 patches of 4x4 pixels
    config.eval_split = "validation"
    config.test_split = "test"
    config.augment = "pad_crop"  # small random shifts; no flips (a flipped 2 is no 2)
    config.pad_crop_pixels = 2
    config.flip = False
    config.eval_resize_ratio = 1.0
    config.optimizer = "adamw"
    config.learning_rate = 3e-3
    config.weight_decay = 0.05
    config.warmup_steps = 100
    config.batch_size = 128
    config.num_train_steps = 1500
    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.eval_batch_size = 256
    return config
