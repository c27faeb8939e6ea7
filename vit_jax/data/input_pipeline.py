"""Input pipeline: tensorflow-datasets + tf.data in, numpy batches out.

The one home of the preprocessing: pixel scaling, augmentations, the eval resize.
Images reach the model as float32 (B, S, S, 3) in [-1, 1] (x / 127.5 - 1, as the
released ViT checkpoints were trained); grayscale is repeated to 3 channels, alpha dropped.
Finding and opening the data source (a tfds name or an image folder) and its errors, and
`get_dataset_info`, are `vit_jax.data.dataset_info`.

Determinism (a run killed and resumed must train on bit-identical batches, and a
P-process run must see the same global batches as a 1-process run):
  * The global training stream is a pure function of (config, position): epoch e is the
    split in file order (no file shuffling), shuffled by a buffer seeded with (seed, e);
    epochs are concatenated and every record gets its global position e * n + j.
  * The batch of step s is positions [s * B, (s + 1) * B); process p keeps rows
    [p * b, (p + 1) * b) with b = B / P. Resuming at step s starts at epoch s * B // n and
    skips the rest of the records of that epoch before any image is decoded.
  * Every random augmentation is a stateless op keyed on (seed, position), so it does not
    depend on thread timing, on restarts, or on which process decodes the image.
Cost: every process reads (but does not decode) every record, the records of the other
processes included, and a resume re-reads up to one epoch of records. Decoding and
augmenting, the expensive part, is done once per example by the process that keeps it.
Files are read in a fixed order, so an epoch's order is random only within the shuffle
buffer (tfds shuffles examples across files when it prepares a dataset, so batches are
still well mixed); we trade that for exactness.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from vit_core.errors import ConfigError
from vit_jax.data import folder, image_check
from vit_jax.data.dataset_info import graph_fn, open_split, split_num_examples

# `tf = _tf()` opens every TF function below: TF is imported on first use, hidden from
# accelerators (dataset_info owns that set-up, shared with the data sources).
from vit_jax.data.dataset_info import import_tensorflow as _tf

# Pixel values: uint8 v ↦ v / 127.5 - 1 ∈ [-1, 1].
PIXEL_SCALE = 127.5
PIXEL_OFFSET = 1.0
DEFAULT_EVAL_RESIZE_RATIO = 0.875  # eval: resize to S / 0.875 (256 for 224), centre crop S
INCEPTION_ASPECT_RANGE = (3 / 4, 4 / 3)
RESIZE_METHOD = "bilinear"  # with antialias, so downscaling does not alias
AUGMENTS = ("inception_crop", "pad_crop", "none")
RANDAUGMENT_STREAM = 1  # folded into an example's seed for its RandAugment draws


def num_eval_batches(
    config: ml_collections.ConfigDict, split: str, *, global_batch_size: int
) -> int:
    """Batches that create_eval_iter yields for `split` (the same on every process)."""
    return math.ceil(split_num_examples(config.dataset, config.data_dir, split) / global_batch_size)


# --- Image transforms (TF ops on one image; uint8/float32 (H, W, C) → float32 (S, S, 3)).


def _normalize(image: Any) -> Any:
    """float pixels in [0, 255] → [-1, 1] (clipped: resizing may overshoot by an ulp)."""
    tf = _tf()
    return tf.clip_by_value(tf.cast(image, tf.float32) / PIXEL_SCALE - PIXEL_OFFSET, -1.0, 1.0)


def _to_rgb(image: Any) -> Any:
    """(H, W, 1|3|4) → (H, W, 3): grayscale repeated, alpha dropped."""
    channels = image.shape[-1]
    if channels == 1:
        return _tf().tile(image, [1, 1, 3])
    if channels == 4:
        return image[..., :3]
    if channels != 3:
        raise ValueError(f"Images need 1, 3 or 4 channels, got shape {image.shape}.")
    return image


def _resize(image: Any, size: Any) -> Any:
    """float32 resize to `size` (h, w); antialiased (a no-op when upscaling)."""
    tf = _tf()
    return tf.image.resize(tf.cast(image, tf.float32), size, RESIZE_METHOD, antialias=True)


def _eval_image(image: Any, image_size: int, resize_ratio: float) -> Any:
    """Resize the short side to image_size / resize_ratio (aspect kept), centre crop."""
    tf = _tf()
    if not 0.0 < resize_ratio <= 1.0:
        raise ConfigError(f"eval_resize_ratio must be in (0, 1], got {resize_ratio}.")
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (image_size / resize_ratio) / tf.reduce_min(hw)
    new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), image_size)
    image = _resize(_to_rgb(image), new_hw)
    top, left = (new_hw[0] - image_size) // 2, (new_hw[1] - image_size) // 2
    image = tf.slice(image, [top, left, 0], [image_size, image_size, 3])
    return _normalize(tf.ensure_shape(image, [image_size, image_size, 3]))


def _decode_train_image(
    encoded: Any, seed: Any, config: ml_collections.ConfigDict, feature: Any
) -> Any:
    """Decodes one training image and applies config.augment, flip and randaugment, all
    keyed on `seed` (2,)."""
    tf = _tf()
    size = config.image_size
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if config.augment == "none":  # exactly the eval transform
        return _eval_image(feature.decode_example(encoded), size, config.eval_resize_ratio)
    if config.augment == "inception_crop":
        jpeg = feature.encoding_format == "jpeg"
        image = None if jpeg else feature.decode_example(encoded)
        shape = tf.image.extract_jpeg_shape(encoded) if jpeg else tf.shape(image)
        begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.zeros([0, 0, 4], tf.float32),
            seed=crop_seed,
            min_object_covered=0.0,
            aspect_ratio_range=INCEPTION_ASPECT_RANGE,
            area_range=(config.crop_min_area, 1.0),
            use_image_if_no_bounding_boxes=True,
        )
        if jpeg:  # decode only the crop: much cheaper for large ImageNet photos
            window = tf.stack([begin[0], begin[1], crop[0], crop[1]])
            image = tf.image.decode_and_crop_jpeg(encoded, window, channels=feature.shape[-1])
        else:
            image = tf.slice(image, begin, crop)
        image = tf.ensure_shape(image, [None, None, feature.shape[-1]])  # static channels
        image = _resize(_to_rgb(image), [size, size])
    elif config.augment == "pad_crop":  # small translations (digits are centred)
        image = _resize(_to_rgb(feature.decode_example(encoded)), [size, size])
        pad = config.pad_crop_pixels
        image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])  # black border, like digits
        image = tf.image.stateless_random_crop(image, [size, size, 3], seed=crop_seed)
    else:
        raise ConfigError(f"config.augment must be one of {AUGMENTS}, got {config.augment!r}.")
    if config.flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    num_layers, magnitude = config.randaugment
    if num_layers:  # on uint8, as the ops are defined; 0 layers leaves the float path as is
        # Imported here: it imports TensorFlow, which `import vit_jax.data.input_pipeline` must not.
        from vit_jax.data import randaugment

        # A stream of its own: the crop and flip seeds stay those of a run without it.
        augment_seed = tf.random.experimental.stateless_fold_in(seed, RANDAUGMENT_STREAM)
        uint8 = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
        image = randaugment.randaugment(uint8, augment_seed, num_layers, magnitude)
    return _normalize(image)


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count}).")
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} must be a positive multiple of "
            f"process_count {process_count}."
        )
    return global_batch_size // process_count


def _options() -> Any:
    options = _tf().data.Options()
    options.deterministic = True  # parallel map/interleave keep their input order
    return options


def _named_errors(batches: Iterator[Any], dataset: str) -> Iterator[Any]:
    """A folder's file that fails to decode mid-run is one error line naming it."""
    if not dataset.startswith(folder.PREFIX):
        return batches
    return image_check.name_decode_errors(batches, dataset[len(folder.PREFIX):])


def create_train_iter(
    config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches of this process, from step `start_step` on.

    Args:
      config: dataset, data_dir, train_split, image_size, augment, crop_min_area,
        pad_crop_pixels, flip, randaugment, eval_resize_ratio, shuffle_buffer, prefetch
        and seed.
      global_batch_size: examples per step over all processes.
      start_step: the first step to yield (resuming); the batches do not depend on it.
      process_index: this process; it gets rows [p * b, (p + 1) * b) of each global batch.
      process_count: processes sharing the global batch.

    Returns:
      An iterator of {"image": float32 (b, S, S, 3) in [-1, 1], "label": int32 (b,)},
      b = global_batch_size // process_count.
    """
    tf = _tf()
    local = _local_batch_size(global_batch_size, process_index, process_count)
    # Imported here: it imports TensorFlow, which `import vit_jax.data.input_pipeline` must not.
    from vit_jax.data import randaugment

    num_layers, _ = randaugment.check_config(config.randaugment)
    if num_layers and config.augment == "none":
        raise ConfigError(
            "config.randaugment needs config.augment 'inception_crop' or 'pad_crop' ('none' is "
            "exactly the eval transform); set config.randaugment = (0, 10) to turn it off.")
    split = open_split(config.dataset, config.data_dir, config.train_split)
    records, n, feature = split.records, split.num_examples, split.image_feature
    if config.augment not in AUGMENTS:
        raise ConfigError(f"config.augment must be one of {AUGMENTS}, got {config.augment!r}.")
    first = start_step * global_batch_size
    start_epoch, skip = divmod(first, n)

    def epoch(e: Any) -> Any:
        # A fresh shuffle per epoch with seed (config.seed, e): reproducible, and different
        # for every epoch (tf combines it with TF's global seed: never set one). Positions
        # e * n + j number the global stream.
        shuffled = records.shuffle(
            config.shuffle_buffer, seed=config.seed * 1_000_003 + e, reshuffle_each_iteration=False
        )
        return shuffled.enumerate().map(graph_fn(lambda j, ex: (e * n + j, ex)))

    def mine(position: Any, _: Any) -> Any:  # row of the global batch → owning process
        return (position % global_batch_size) // local == process_index

    def decode(position: Any, ex: dict[str, Any]) -> dict[str, Any]:
        seed = tf.stack([tf.constant(config.seed, tf.int64), position])
        image = _decode_train_image(ex["image"], seed, config, feature)
        return {"image": image, "label": tf.cast(ex["label"], tf.int32)}

    ds = tf.data.Dataset.counter(start_epoch).flat_map(graph_fn(epoch)).skip(skip)
    ds = ds.filter(graph_fn(mine)).map(graph_fn(decode), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local, drop_remainder=True).prefetch(config.prefetch)
    return _named_errors(iter(tfds.as_numpy(ds.with_options(_options()))), config.dataset)


def create_eval_iter(
    config: ml_collections.ConfigDict,
    split: str,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `split`: every example exactly once over all processes.

    The split is read in file order; global batch k holds examples [k * B, (k + 1) * B) and
    process p its rows [p * b, (p + 1) * b). The last global batch is padded (mask 0, image
    and label 0), so every process yields num_eval_batches(...) full batches.

    Args:
      config: dataset, data_dir, image_size, eval_resize_ratio and prefetch.
      split: a tfds split, e.g. "validation", "test" or "train[:10%]".
      global_batch_size: examples per batch over all processes.
      process_index: this process.
      process_count: processes sharing each global batch.

    Returns:
      An iterator of {"image": float32 (b, S, S, 3), "label": int32 (b,),
      "mask": float32 (b,)} (1 for real examples, 0 for padding).
    """
    tf = _tf()
    local = _local_batch_size(global_batch_size, process_index, process_count)
    opened = open_split(config.dataset, config.data_dir, split)
    records, n, feature = opened.records, opened.num_examples, opened.image_feature
    size, ratio = config.image_size, config.eval_resize_ratio
    num_batches = math.ceil(n / global_batch_size)
    full, rest = divmod(n, global_batch_size)
    num_real = full * local + min(max(rest - process_index * local, 0), local)

    def decode(ex: dict[str, Any]) -> dict[str, Any]:
        image = _eval_image(feature.decode_example(ex["image"]), size, ratio)
        label = tf.cast(ex["label"], tf.int32)
        return {"image": image, "label": label, "mask": tf.constant(1.0, tf.float32)}

    ds = records.enumerate()
    ds = ds.filter(graph_fn(lambda i, _: (i % global_batch_size) // local == process_index))
    ds = ds.map(graph_fn(lambda _, ex: decode(ex)), num_parallel_calls=tf.data.AUTOTUNE)
    padding = {
        "image": tf.zeros([size, size, 3], tf.float32),
        "label": tf.constant(0, tf.int32),
        "mask": tf.constant(0.0, tf.float32),
    }
    pad = tf.data.Dataset.from_tensors(padding).repeat(num_batches * local - num_real)
    ds = ds.concatenate(pad).batch(local).prefetch(config.prefetch)
    return _named_errors(iter(tfds.as_numpy(ds.with_options(_options()))), config.dataset)


def preprocess_for_eval(
    image: np.ndarray, image_size: int, resize_ratio: float = DEFAULT_EVAL_RESIZE_RATIO
) -> np.ndarray:
    """The eval transform of the pipeline, on one image (e.g. for a predict tool).

    Args:
      image: uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).
      image_size: S, the model's input size.
      resize_ratio: the central crop's share of the resized image (config.eval_resize_ratio).

    Returns:
      float32 (S, S, 3) in [-1, 1], equal to what create_eval_iter yields for this image.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"Expected a uint8 (H, W[, C]) image, got {image.dtype} {image.shape}.")
    return _eval_image(_tf().constant(image), image_size, resize_ratio).numpy()
