"""ViT-S/16 from scratch on ImageNet-1k: big_vision's `configs/vit_s16_i1k.py`, field for field.

  python -m vit_jax.train --config configs/s16_i1k.py --workdir runs/s16_i1k \
      --config.data_dir=/path/to/tensorflow_datasets
  python -m vit_jax.train --config configs/s16_i1k.py:300ep --workdir runs/s16_i1k_300ep \
      --config.data_dir=/path/to/tensorflow_datasets

Beyer, Zhai & Kolesnikov 2022, "Better plain ViT baselines for ImageNet-1k" (arXiv
2205.01580): 76.5% top-1 after 90 epochs (big_vision's config docstring; 6-7 h on a
TPU-v3-8); big_vision runs 300 epochs with `--config.num_epochs 300`, here the
`:300ep` argument. Every field, and where big_vision sets it (`config.` there):

  dataset imagenet2012, train_split train[:99%]   dataset, train_split
  eval_split train[99%:] (model selection)       evals.minival.split
  test_split validation (reported apart)         evals.val.split
  batch_size 1024, num_epochs 90 (300)           batch_size, num_epochs
  shuffle_buffer 250_000                         shuffle_buffer_size ("per host"; here
                                                 encoded JPEGs, ~28 GB of host memory:
                                                 lower it on a smaller machine)
  224² Inception crop, area ≥ 5%, flip           pp_train decode_jpeg_and_inception_crop(224)
                                                 (big_vision's default area_min=5) | flip_lr
  randaugment (2, 10)                            pp_train randaug(2,10)
  eval: resize 256, centre crop 224              pp_eval resize_small(256)|central_crop(224):
                                                 eval_resize_ratio = 224/256
  pixels in [-1, 1], one-hot labels, no smoothing   pp value_range(-1, 1), onehot; loss
                                                 softmax_xent (label_smoothing 0)
  model S/16, classifier "gap", posemb "sincos2d",   model variant, pool_type, posemb,
  representation_size = width (384)              rep_size=True (big_vision models/vit.py:
                                                 rep_size = width when True; tanh)
  no dropout, no stochastic depth, float32       big_vision vit.py defaults
  grad_clip_norm 1.0                             grad_clip_norm
  AdamW = scale_by_adam (β 0.9, 0.999), first    optax_name scale_by_adam, optax
  moment in bfloat16                             mu_dtype='bfloat16' (optax defaults)
  learning_rate 1e-3, warm-up 10k steps, cosine  lr, schedule warmup_steps, decay_type
  to 0
  weight_decay 1e-4, "decoupled" (kernels only)  wd; big_vision/optax.py (see
                                                 vit_jax/training/optim.py for the formula)
  mixup_alpha 0.2 (no CutMix)                    mixup p=0.2
  log every 50, checkpoint every 1000, eval      log_training_steps, checkpoint_steps,
  every 2500 steps                               evals log_steps

Not carried over: big_vision's `cache_raw` (its whole-dataset RAM cache), and its extra
evaluations (`train[:2%]`, ImageNet-v2, ReaL), which need data sets of their own.

The argument (after ":") is a comma-separated list: "300ep" trains 300 epochs; "runlocal"
shrinks everything (the "testing" model, 32² images, batch 16, 2 steps) for tests and a
smoke run, keeping every recipe choice.
"""

import ml_collections

from configs import default
from vit_core.errors import ConfigError
from vit_core.variants import decode_variant

ARGS = ("300ep", "runlocal")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the ViT-S/16 ImageNet-1k config.

    Args:
      arg: "", "300ep", "runlocal" or "300ep,runlocal" (see the module docstring).
    """
    args = set(filter(None, (arg or "").split(",")))
    if args - set(ARGS):
        raise ConfigError(f"Unknown config argument(s) {sorted(args - set(ARGS))}; known: {ARGS}.")
    config = default.get_config()
    config.dataset = "imagenet2012"
    config.train_split = "train[:99%]"
    config.eval_split = "train[99%:]"
    config.test_split = "validation"
    config.batch_size = 1024
    config.num_epochs = 300.0 if "300ep" in args else 90.0
    config.shuffle_buffer = 250_000

    config.image_size = 224
    config.augment = "inception_crop"
    config.crop_min_area = 0.05
    config.flip = True
    config.randaugment = (2, 10)
    config.eval_resize_ratio = 224 / 256

    config.model.variant = "S/16"
    config.model.classifier = "gap"
    config.model.posemb = "sincos2d"
    config.model.representation_size = decode_variant("S/16").hidden_size
    config.model.dropout_rate = 0.0
    config.model.stochastic_depth = 0.0
    config.model.dtype = "float32"

    config.grad_clip_norm = 1.0
    config.optimizer = "adamw"
    config.b1, config.b2 = 0.9, 0.999
    config.adam_mu_dtype = "bfloat16"
    config.learning_rate = 1e-3
    config.schedule = "cosine"
    config.warmup_steps = 10_000
    config.end_learning_rate = 0.0
    config.weight_decay = 1e-4
    config.weight_decay_convention = "decoupled"
    config.label_smoothing = 0.0
    config.mixup_alpha = 0.2
    config.cutmix_alpha = 0.0

    config.log_every_steps = 50
    config.checkpoint_every_steps = 1000
    config.eval_every_steps = 2500
    config.eval_batch_size = 1024

    if "runlocal" in args:
        config.model.variant = "testing"
        config.model.representation_size = decode_variant("testing").hidden_size
        config.image_size, config.batch_size, config.eval_batch_size = 32, 16, 16
        config.num_epochs, config.num_train_steps, config.warmup_steps = None, 2, 1
        config.shuffle_buffer = 100
        config.log_every_steps = config.checkpoint_every_steps = 1
        config.eval_every_steps = 0
    return config
