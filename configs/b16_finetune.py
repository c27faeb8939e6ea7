"""Fine-tune a released ViT-B/16 (.npz) at 384² on ImageNet-1k (or any tfds dataset).

  python -m vit_jax.train --config configs/b16_finetune.py --workdir runs/b16_ft \
      --config.init_checkpoint=/path/to/ViT-B_16.npz --config.data_dir=/path/to/tfds

Recipe: Dosovitskiy et al. 2020, Appendix B.1.1: SGD with momentum 0.9, batch 512, no
weight decay, global-norm clipping at 1, short linear warm-up then cosine decay, fine-
tuning resolution 384 (Touvron et al.: higher resolution than pre-training helps). The
learning rate is swept in the paper over {0.003, 0.01, 0.03, 0.06}; 0.01 is a middle
choice. The head is re-initialised (zeros) for the new class count and the position
embeddings are resized from 14×14 to 24×24 patches (`vit_core.posemb.resize_posemb`).
Other datasets: --config.dataset=cifar10 --config.train_split=train[:98%] ...
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the ViT-B/16 fine-tuning config."""
    config = default.get_config()
    config.model.variant = "B/16"
    config.model.dtype = "bfloat16"
    config.init_checkpoint = "ViT-B_16.npz"  # a released checkpoint; override the path
    config.reinit_head = True
    config.dataset = "imagenet2012"
    config.train_split = "train[:99%]"
    config.eval_split = "train[99%:]"
    config.test_split = "validation"
    config.image_size = 384
    config.augment = "inception_crop"
    config.crop_min_area = 0.05
    config.flip = True
    config.eval_resize_ratio = 0.875
    config.optimizer = "sgd"
    config.momentum = 0.9
    config.weight_decay = 0.0
    config.learning_rate = 0.01
    config.schedule = "cosine"
    config.warmup_steps = 500
    config.grad_clip_norm = 1.0
    config.batch_size = 512
    config.num_train_steps = 20_000
    config.log_every_steps = 100
    config.eval_every_steps = 2000
    config.checkpoint_every_steps = 1000
    config.eval_batch_size = 512
    return config
