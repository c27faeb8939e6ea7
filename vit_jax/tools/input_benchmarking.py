"""Input pipeline speed: training images decoded and augmented per second per CPU core.

The library of `python -m vit_jax.input_benchmark`.
Writes ImageNet-shaped JPEGs once (photo-like content, 500×375 by default, about the size
of an average ImageNet photo) into a temporary tfds data_dir as the dataset
"input_benchmark_photos", then runs the project's real training pipeline on it,
`vit_jax.data.input_pipeline.create_train_iter` with a config file's preprocessing (default
`configs/b16.py`: Inception crop decoded with `decode_and_crop_jpeg`, resize to 224,
flip, scaling to [-1, 1], batching), once per `--randaugment` setting (default off,
(2, 10) and (2, 15)). Settings are interleaved over `--repeats`, each measurement on a
fresh iterator after `--warmup` batches.

Figures: images per wall second with the cores this process may use, and images per
process CPU second (all threads), i.e. per core: the rate of one core if decoding scales
linearly with cores (it is per image and independent; memory bandwidth is the usual
limit). CPU seconds barely move when other jobs share the machine, wall seconds do. The
last column divides `--gpu-images-per-s` (a GPU's training speed) by the per-core rate:
the host cores that one GPU needs just to be fed, before the training loop's own work.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vit_jax.data import input_pipeline

DATASET = "input_benchmark_photos"


@dataclasses.dataclass
class Options:
    """What to measure (the CLI flags; see `--help`)."""

    config: str = "configs/b16.py"
    num_images: int = 256
    width: int = 500
    height: int = 375
    jpeg_quality: int = 94  # ≈ 115 kB per 500x375 photo; ImageNet train averages ≈ 110 kB
    batch_size: int = 64
    warmup: int = 3
    batches: int = 12
    repeats: int = 3
    randaugment: tuple[tuple[int, float], ...] = ((0, 10.0), (2, 10.0), (2, 15.0))
    gpu_images_per_s: float = 2500.0
    data_dir: str | None = None  # None: a temporary directory, removed at the end
    image_size: int | None = None  # None: the config's


class InputBenchmarkPhotos(tfds.core.GeneratorBasedBuilder):
    """The JPEGs in `<data_dir>/downloads/manual` as a tfds dataset (one "train" split)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Photos written by the benchmark."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "vit_jax.input_benchmark writes the JPEGs itself."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=1000)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        return {"train": self._generate_examples(dl_manager.manual_dir)}

    def _generate_examples(self, directory: epath.Path) -> Iterator[tuple[str, dict[str, Any]]]:
        for i, path in enumerate(sorted(directory.glob("*.jpg"))):
            yield path.name, {"image": path.read_bytes(), "label": i % 1000}  # bytes as is


def photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo-like uint8 (H, W, 3) image: smooth colour fields, texture, edges and grain.

    Content decides how large a JPEG is and so how long it takes to decode: flat images
    would flatter the pipeline, white noise would penalise it.
    """
    import tensorflow as tf  # TF is imported by the pipeline anyway; resize is its bicubic

    def field(h: int, w: int, scale: float, channels: int) -> np.ndarray:  # (H, W, channels)
        small = rng.normal(0.0, scale, (1, h, w, channels)).astype(np.float32)
        return tf.image.resize(small, (height, width), "bicubic")[0].numpy()

    def octave(pixels: int, scale: float, channels: int) -> np.ndarray:  # features ~pixels wide
        return field(max(height // pixels, 2), max(width // pixels, 2), scale, channels)

    # Detail at every scale in the brightness, less in the colour, as in photographs.
    luma = sum(octave(p, s, 1) for p, s in [(125, 40.0), (31, 25.0), (8, 16.0), (4, 14.0),
                                            (2, 20.0)])
    image = 120.0 + luma + octave(125, 30.0, 3) + octave(16, 10.0, 3)
    for _ in range(4):  # objects with hard edges
        h, w = rng.integers(height // 8, height // 2 + 1), rng.integers(width // 8, width // 2 + 1)
        top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        image[top:top + h, left:left + w] += rng.normal(0.0, 40.0, 3)
    image += rng.normal(0.0, 9.0, image.shape)  # sensor grain
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def write_source(data_dir: str, opts: Options) -> dict[str, Any]:
    """Writes the JPEGs and prepares the tfds dataset in `data_dir` (once per data_dir).

    Returns:
      The source's description: image count, size, JPEG quality, mean file size.
    """
    import tensorflow as tf  # TF's encoder: the format the decoder of the pipeline reads

    manual = os.path.join(data_dir, "downloads", "manual")
    os.makedirs(manual, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(opts.num_images):
        path = os.path.join(manual, f"{i:06d}.jpg")
        if not os.path.exists(path):
            image = photo(rng, opts.height, opts.width)
            jpeg = tf.io.encode_jpeg(image, quality=opts.jpeg_quality).numpy()
            with open(path, "wb") as f:
                f.write(jpeg)
    builder = InputBenchmarkPhotos(data_dir=data_dir)
    if not builder.is_prepared():
        builder.download_and_prepare()
    paths = sorted(os.listdir(manual))[: opts.num_images]
    sizes = [os.path.getsize(os.path.join(manual, p)) for p in paths]
    return {"num_images": len(sizes), "width": opts.width, "height": opts.height,
            "jpeg_quality": opts.jpeg_quality, "mean_jpeg_bytes": int(np.mean(sizes))}


def load_config(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of a config file.

    Args:
      path: the config file (configs/*.py import `configs`: run from the repository root,
        as for `python -m vit_jax.train --config ...`).

    Returns:
      Its ConfigDict.
    """
    spec = importlib.util.spec_from_file_location("_input_benchmark_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def measure(config: ml_collections.ConfigDict, batch_size: int, warmup: int,
            batches: int) -> dict[str, float]:
    """Times `batches` batches of a fresh training iterator after `warmup` batches.

    Returns:
      images, wall_s and cpu_s (process CPU seconds, all threads) of the timed batches.
    """
    it = input_pipeline.create_train_iter(config, global_batch_size=batch_size)
    for _ in range(warmup):  # builds the graph, starts the threads, lets autotuning settle
        next(it)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    del it
    gc.collect()  # stops this iterator's threads before the next measurement
    return {"images": batches * batch_size, "wall_s": wall, "cpu_s": cpu}


def _label(randaugment: tuple[int, float]) -> str:
    return "off" if randaugment[0] == 0 else f"({randaugment[0]}, {randaugment[1]:g})"


def run_benchmark(opts: Options) -> dict[str, Any]:
    """Prepares the source, measures every setting and returns the results (see `main`)."""
    temp = None if opts.data_dir else tempfile.TemporaryDirectory(prefix="input_benchmark_")
    data_dir = opts.data_dir or temp.name
    try:
        load_start = os.getloadavg()
        source = write_source(data_dir, opts)
        base = load_config(opts.config)
        base.dataset, base.data_dir, base.train_split = DATASET, data_dir, "train"
        if opts.image_size:
            base.image_size = opts.image_size
        runs: dict[tuple[int, float], list[dict[str, float]]] = {s: [] for s in opts.randaugment}
        for _ in range(opts.repeats):  # interleaved: machine noise hits every setting
            for setting in opts.randaugment:
                config = base.copy_and_resolve_references()
                config.randaugment = tuple(setting)
                runs[setting].append(measure(config, opts.batch_size, opts.warmup, opts.batches))
        load_end = os.getloadavg()
    finally:
        if temp is not None:
            temp.cleanup()
    rows = []
    for setting, samples in runs.items():
        per_core = statistics.median(s["images"] / s["cpu_s"] for s in samples)
        rows.append({
            "randaugment": list(setting),
            "label": _label(setting),
            "images_per_s": statistics.median(s["images"] / s["wall_s"] for s in samples),
            "images_per_core_s": per_core,
            "cores_busy": statistics.median(s["cpu_s"] / s["wall_s"] for s in samples),
            "cores_per_gpu": opts.gpu_images_per_s / per_core,
            "samples": samples,
        })
    return {
        "machine": {"cpus_usable": len(os.sched_getaffinity(0)), "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                    "loadavg_start": list(load_start), "loadavg_end": list(load_end),
                    "python": platform.python_version(), "tensorflow": _tf_version()},
        "source": source,
        "pipeline": {"config": opts.config, "image_size": base.image_size,
                     "augment": base.augment, "crop_min_area": base.crop_min_area,
                     "flip": base.flip, "batch_size": opts.batch_size,
                     "warmup": opts.warmup, "batches": opts.batches, "repeats": opts.repeats},
        "gpu_images_per_s": opts.gpu_images_per_s,
        "rows": rows,
    }


def _tf_version() -> str:
    import tensorflow as tf  # already imported by the pipeline

    return tf.__version__


def format_table(result: dict[str, Any]) -> str:
    """The results as a Markdown table, with a line on the machine and the source."""
    m, s, p = result["machine"], result["source"], result["pipeline"]
    lines = [
        f"{s['num_images']} JPEGs {s['width']}x{s['height']} q{s['jpeg_quality']} "
        f"(mean {s['mean_jpeg_bytes'] / 1000:.0f} kB) -> {p['augment']} {p['image_size']}², "
        f"flip {p['flip']}, batch {p['batch_size']}; {m['cpus_usable']} usable CPUs, "
        f"load {m['loadavg_start'][0]:.1f} -> {m['loadavg_end'][0]:.1f}",
        "",
        f"| RandAugment | img/s (wall, {m['cpus_usable']} CPUs) | img/s per core (CPU s) "
        f"| cores busy | cores for {result['gpu_images_per_s']:,.0f} img/s |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['label']} | {r['images_per_s']:,.0f} | {r['images_per_core_s']:,.0f} "
                     f"| {r['cores_busy']:.2f} | {r['cores_per_gpu']:.1f} |")
    return "\n".join(lines)
