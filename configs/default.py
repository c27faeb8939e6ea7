"""Shared defaults for every vit-jax config; the other configs start from these.

Not meant to be run on its own: the model is the tiny "testing" variant on digits.
  python -m vit_jax.train --config configs/default.py --workdir /tmp/vit_default
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """Returns the default ConfigDict (every field a config may override)."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    # --- Model: the architecture fields are those of vit_core.spec.ViTSpec (see there); the
    # rest (dropout, attention_impl, remat, scan, dtype, head_bias_init) are run options of
    # vit_jax.model.vit.VisionTransformer.
    config.model = ml_collections.ConfigDict()
    config.model.variant = "testing"  # a name from vit_core/variants.py, e.g. "B/16"
    config.model.patch_size = ml_collections.FieldReference(None, field_type=int)  # None: variant's
    # "token" (class token, the official ViT), "gap" (mean of the tokens) or "map" (big_vision's
    # attention-pooling MAPHead, as SigLIP); only "token" has a class token.
    config.model.classifier = "token"
    # "learn" (learned, over class token + patches: the released weights) or "sincos2d"
    # (big_vision's fixed 2-D sin-cos table on the patches only; no parameter, any image size).
    config.model.posemb = "learn"
    config.model.representation_size = ml_collections.FieldReference(None, field_type=int)
    # Learned register tokens after the class token, dropped by the pooling ("Vision
    # Transformers Need Registers"; timm's reg_tokens). 0: none, as the paper's ViT.
    config.model.num_registers = 0
    # A hybrid's ResNet (paper §3.1): units per stage, e.g. (3, 4, 9); None: the variant's
    # (the "R50+B/16"-style variants have one, the plain ones none). Width factor likewise.
    config.model.resnet_layers = ml_collections.FieldReference(None, field_type=tuple)
    config.model.resnet_width = ml_collections.FieldReference(None, field_type=int)
    config.model.layer_norm_eps = 1e-6  # every LayerNorm (official, timm); HF's files say 1e-12
    config.model.dropout_rate = 0.0
    config.model.attention_dropout_rate = 0.0
    config.model.stochastic_depth = 0.0
    config.model.gelu_approximate = True
    # None: vit_jax/model/attention.py softmax attention (fastest measured on CPU); "xla" or
    # "cudnn" (GPU flash, tokens padded to a multiple of 16): jax.nn.dot_product_attention.
    config.model.attention_impl = ml_collections.FieldReference(None, field_type=str)
    config.model.remat = False  # True: as remat_policy="none"
    # What each block keeps for its backward pass: "default" (all autodiff saves), "none"
    # (nothing; recomputed) or "dots" (Dense outputs). Trade-off measured in the README.
    config.model.remat_policy = "default"
    config.model.scan = False
    config.model.dtype = "float32"  # compute dtype: "float32" or "bfloat16"
    config.model.head_bias_init = 0.0

    # --- Data (tensorflow-datasets, or a folder of images).
    # A tfds name ("digits" (bundled), "cifar10", "imagenet2012", ...; prepare it once with
    # `python -m vit_jax.prepare NAME`), or "folder:PATH" for PATH/train/CLASS/*.jpg
    # (vit_jax/data/folder.py; splits "train", "validation", "test").
    config.dataset = "digits"
    config.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: tfds default
    # The splits (vit_jax/training/run_plan.py): a split given on the command line is used as given.
    # Otherwise a "folder:" dataset uses its own: train/, val/ (or the part held out of
    # train/), test/ when it exists; a tfds dataset uses these strings where it has the
    # splits they name, else its own "train" / "validation" / "test" (none if it has none).
    config.train_split = "train"
    config.eval_split = "validation"  # model selection only; the test split is reported apart
    config.test_split = ml_collections.FieldReference(None, field_type=str)  # e.g. "test"
    config.image_size = 32
    config.augment = "inception_crop"  # "inception_crop" | "pad_crop" | "none"
    config.crop_min_area = 0.05  # inception crop: smallest area fraction
    config.pad_crop_pixels = 2  # pad_crop: max shift in pixels (of the resized image)
    config.flip = True  # random horizontal flip (not for digits)
    # RandAugment (num_layers, magnitude) on the uint8 crop (vit_jax/data/randaugment.py);
    # 0 layers: off. big_vision's ImageNet ViT configs use (2, 10) or (2, 15).
    config.randaugment = (0, 10)
    config.eval_resize_ratio = 0.875  # eval: resize to image_size / ratio, centre crop
    config.shuffle_buffer = 10_000
    config.prefetch = 2

    # --- Optimisation (optax).
    config.optimizer = "adamw"  # "adamw" | "sgd"
    config.learning_rate = 1e-3  # peak (after warm-up)
    config.schedule = "cosine"  # "cosine" | "linear" | "constant" (after warm-up)
    config.warmup_steps = 10
    config.end_learning_rate = 0.0
    config.b1 = 0.9
    config.b2 = 0.999
    config.momentum = 0.9  # sgd
    config.weight_decay = 0.0
    # "lr_scaled": decay wd·η(t)·p (optax.adamw, torch AdamW); "decoupled": wd·η(t)/lr·p
    # (big_vision): see vit_jax/training/optim.py. Only kernels decay (AdamW; SGD "lr_scaled": all).
    config.weight_decay_convention = "lr_scaled"
    config.adam_mu_dtype = ml_collections.FieldReference(None, field_type=str)  # None: params'
    config.grad_clip_norm = 1.0  # global-norm clipping; 0 disables
    config.label_smoothing = 0.0
    # Mixup / CutMix on each batch inside the train step (vit_jax/data/mixup.py); 0 = off.
    config.mixup_alpha = 0.0  # λ ~ Beta(α, α), λ = max(λ, 1 − λ) (big_vision)
    config.cutmix_alpha = 0.0  # box of area (1 − λ), λ ~ Beta(α, α) (timm)
    config.mixup_switch_prob = 0.5  # both on: CutMix with this probability per batch (timm)
    config.batch_size = 64  # global batch (all devices, all processes)
    config.grad_accum_steps = 1  # micro-batches per optimizer step (optax.MultiSteps)
    # How long (vit_jax/training/run_plan.py): num_epochs, when set, is converted to steps
    # (ceil(epochs × train examples / batch_size)), else num_train_steps is used; either one
    # given on the command line (--config.num_train_steps=N or --config.num_epochs=E) wins
    # over what the config file set. The start-up line says how many steps and why.
    config.num_train_steps = 100
    config.num_epochs = ml_collections.FieldReference(None, field_type=float)

    # --- Fine-tuning from a released .npz (or a vit-jax checkpoint).
    # A path to an .npz (official, linen-numbered or big_vision layout) or a released name
    # from vit_jax/weights/pretrained.py (e.g. "vit_base_patch16_224.augreg_in21k_ft_in1k", whose
    # model options are then used; downloaded into $VIT_JAX_CACHE on first use, see
    # vit_jax/weights/download.py) or hf-hub:ORG/REPO; "" trains from scratch.
    config.init_checkpoint = ""
    config.init_checkpoint_dir = ""  # where released names are looked for (downloaded files)
    config.reinit_head = True  # new head (zeros) for the new class count

    # --- Parallelism, logging, checkpoints.
    config.parallelism = "jit"  # "jit" (batch over a mesh) | "fsdp" (+ state split) | "pmap"
    config.log_every_steps = 10
    config.eval_every_steps = 0  # 0: only at the end
    config.checkpoint_every_steps = 50
    config.max_checkpoints_to_keep = 2
    config.sync_every_steps = 10  # block on the device at least this often (CPU deadlock guard)
    config.eval_batch_size = 256

    # --- Few-shot linear evaluation during training (vit_jax/tools/linear_fewshot.py: §4.1,
    # big_vision's fewshot_lsr): pre-logits features, ridge regression to ±1 targets.
    config.fewshot = ml_collections.ConfigDict()
    config.fewshot.every_steps = 0  # 0: off; else every this many steps and at the end
    config.fewshot.dataset = ""  # "": config.dataset
    config.fewshot.train_split = "train"  # where the k shots per class come from
    config.fewshot.test_split = "test"
    config.fewshot.shots = (1, 5, 10, 25)
    config.fewshot.seeds = 3  # mean over seeds 0 .. seeds - 1
    config.fewshot.l2_reg = 2.0 ** 10  # big_vision's configs/common_fewshot.py
    return config
