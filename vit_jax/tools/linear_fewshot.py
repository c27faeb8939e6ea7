"""Few-shot linear evaluation (the library of `python -m vit_jax.fewshot`).

The paper's §4.1 "linear few-shot accuracies" (Dosovitskiy et al. 2020), computed as
big_vision's `evaluators/fewshot_lsr.py` with the defaults of its
`configs/common_fewshot.py`:

1. the frozen model's pre-logits features (`out["pre_logits"]`) of every image of the
   train and test splits, through the eval transform (resize, centre crop);
2. per seed s, each class's train examples in the order `np.random.default_rng(s)
   .permutation`, and the first k of them for k shots (so the 5 shots hold the 1 shot);
3. the k·C chosen features whitened by their own mean and standard deviation (+1e-5),
   a constant feature `BIAS_CONSTANT` = 100 appended (a bias that the ridge penalty
   barely touches), one-hot targets in {−1, +1};
4. the closed-form ridge regression W = (XᵀX + λI)⁻¹XᵀY (or Xᵀ(XXᵀ + λI)⁻¹Y when there
   are fewer points than features: the same W), λ = `DEFAULT_L2_REG` = 2¹⁰;
5. top-1 accuracy of argmax(X_test W) on the whole test split; the mean over seeds
   0, 1, 2 is the reported figure.

big_vision solves in float32 on the host; this module solves in float64 (numpy).
The training loop (`vit_jax.training.trainer`) runs a `FewshotEvaluator` every
`config.fewshot.every_steps` steps.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from vit_core.errors import ConfigError
from vit_jax.data import dataset_info, input_pipeline
from vit_jax.model import vit
from vit_jax.tools import prediction
from vit_jax.training.history import shots_key
from vit_jax.weights import loading

BIAS_CONSTANT = 100.0  # big_vision: "large so it's almost unregularized"
DEFAULT_L2_REG = 2.0 ** 10  # big_vision configs/common_fewshot.py
DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_SEEDS = 3
STD_EPSILON = 1e-5  # added to the per-feature standard deviation before whitening
_PROGRESS_EVERY_S = 2.0


# ------------------------------------------------------------------ the regression
def whiten_and_pad(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Features standardised by (mean, std) with the constant bias feature appended.

    Args:
      x: (N, D) features.
      mean: (1, D) the training shots' mean.
      std: (1, D) their standard deviation (already + `STD_EPSILON`).

    Returns:
      (N, D + 1) float64.
    """
    z = (np.asarray(x, np.float64) - mean) / std  # (N, D)
    return np.pad(z, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)  # (N, D + 1)


def signed_one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, C) targets: +1 at each example's class, −1 elsewhere."""
    return 2.0 * np.eye(num_classes)[np.asarray(labels)] - 1.0  # (N, C)


def solve_lsr(x: np.ndarray, labels: np.ndarray, num_classes: int,
              l2_reg: float = DEFAULT_L2_REG) -> dict[str, np.ndarray]:
    """Closed-form ridge regression of whitened, bias-padded features to ±1 targets.

    Args:
      x: (N, D) features of the training shots.
      labels: (N,) their classes in [0, num_classes).
      num_classes: C.
      l2_reg: the ridge penalty λ (> 0).

    Returns:
      {"weights": (D + 1, C), "mean": (1, D), "std": (1, D)}: what `predict_lsr` needs.
    """
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0, keepdims=True)  # (1, D)
    std = x.std(axis=0, keepdims=True) + STD_EPSILON  # (1, D), population std as jnp.std
    xp = whiten_and_pad(x, mean, std)  # (N, D + 1)
    y = signed_one_hot(labels, num_classes)  # (N, C)
    n, d = xp.shape
    # Solve the smaller of the two systems (big_vision does the same with an eigh).
    if n >= d:
        w = np.linalg.solve(xp.T @ xp + l2_reg * np.eye(d), xp.T @ y)  # (D + 1, C)
    else:
        w = xp.T @ np.linalg.solve(xp @ xp.T + l2_reg * np.eye(n), y)  # (D + 1, C)
    return {"weights": w, "mean": mean, "std": std}


def predict_lsr(solution: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """(N, C) regression scores of features `x` (N, D); argmax is the predicted class."""
    return whiten_and_pad(x, solution["mean"], solution["std"]) @ solution["weights"]


def shot_indices(labels: np.ndarray, num_classes: int, shots: Sequence[int],
                 seed: int) -> dict[int, np.ndarray]:
    """The train examples of each shot count for one seed (big_vision's selection).

    Args:
      labels: (N,) train labels.
      num_classes: C.
      shots: shot counts k; a class with fewer than k examples gives all it has.
      seed: seeds `np.random.default_rng`; each class's examples are permuted once and the
        first k taken, so larger shot counts contain the smaller ones.

    Returns:
      k -> indices into `labels`, class by class.
    """
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    return {k: np.concatenate([idx[:k] for idx in per_class]) for k in shots}


def fewshot_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                     test_y: np.ndarray, num_classes: int,
                     shots: Sequence[int] = DEFAULT_SHOTS, seeds: int = DEFAULT_SEEDS,
                     l2_reg: float = DEFAULT_L2_REG) -> dict[int, list[float]]:
    """Few-shot top-1 accuracy of a linear regression on frozen features, per seed.

    Args:
      train_x: (N, D) features of the train split; train_y: (N,) labels.
      test_x: (M, D) features of the test split; test_y: (M,) labels.
      num_classes: C.
      shots: the shot counts k (examples per class).
      seeds: runs with seeds 0 .. seeds - 1.
      l2_reg: the ridge penalty.

    Returns:
      k -> [accuracy of seed 0, seed 1, ...]; report their mean.
    """
    check_options(shots, seeds, l2_reg)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    results: dict[int, list[float]] = {k: [] for k in shots}
    for seed in range(seeds):
        for k, idx in shot_indices(train_y, num_classes, shots, seed).items():
            solution = solve_lsr(train_x[idx], train_y[idx], num_classes, l2_reg)
            predicted = predict_lsr(solution, test_x).argmax(axis=1)  # (M,)
            results[k].append(float(np.mean(predicted == test_y)))
    return results


def check_options(shots: Sequence[int], seeds: int, l2_reg: float) -> None:
    """Raises ConfigError for shot counts < 1, no seeds, or a penalty that is not > 0."""
    if not shots or any(int(k) != k or k < 1 for k in shots):
        raise ConfigError(f"shots must be whole numbers ≥ 1, got {list(shots)}.")
    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1, got {seeds}.")
    if not l2_reg > 0:
        raise ConfigError(f"l2_reg must be > 0 (the ridge penalty), got {l2_reg}.")


# ------------------------------------------------------------------ the features
@functools.partial(jax.jit, static_argnums=0)  # compiled once per model
def _pre_logits(model: vit.VisionTransformer, params: Any, images: jax.Array) -> jax.Array:
    _, out = model.apply({"params": params}, images, return_features=True)
    return out["pre_logits"].astype(jnp.float32)  # (B, D)


def extract_features(model: vit.VisionTransformer, params: Any,
                     data: ml_collections.ConfigDict, split: str, batch_size: int = 64,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pre-logits features of every image of a split, in file order.

    Args:
      model: the module (its head, if any, is ignored).
      params: host (numpy) or single-device parameters.
      data: `dataset`, `data_dir`, `image_size`, `eval_resize_ratio`, `prefetch`.
      split: a tfds split, e.g. "train" or "train[:65000]".
      batch_size: images per forward pass.
      progress: print "features <split>: n/N images" to stderr every few seconds.

    Returns:
      (N, D) float32 features and (N,) int labels.
    """
    total = dataset_info.split_num_examples(data.dataset, data.data_dir, split)
    feats, labels = [], []
    done, last = 0, time.time()
    # One process reads the whole split: the evaluator runs the same work on every process.
    for batch in input_pipeline.create_eval_iter(data, split, global_batch_size=batch_size):
        real = batch["mask"] > 0
        feats.append(np.asarray(_pre_logits(model, params, jnp.asarray(batch["image"])))[real])
        labels.append(batch["label"][real])
        done += int(real.sum())
        if progress and (time.time() - last > _PROGRESS_EVERY_S or done == total):
            print(f"features {split}: {done}/{total} images", file=sys.stderr, flush=True)
            last = time.time()
    return np.concatenate(feats), np.concatenate(labels)


def host_params(params: Any) -> Any:
    """Parameters as numpy arrays on this host.

    Args:
      params: numpy arrays, arrays on this process's devices (a pmap layout's
        unreplicated copy), or global arrays split over several processes (jit / fsdp on
        many hosts: gathered, a collective that every process must reach).

    Returns:
      The same tree of numpy arrays.
    """
    leaves = jax.tree.leaves(params)
    if all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return jax.device_get(params)
    return multihost_utils.process_allgather(params, tiled=True)


class FewshotEvaluator:
    """Few-shot accuracies of a model's current parameters on one dataset (for training).

    Args:
      model: the module being trained.
      data: a config with `dataset`, `data_dir`, `image_size`, `eval_resize_ratio`,
        `prefetch` (e.g. the training config, with `dataset` replaced).
      train_split, test_split: where the shots and the test images come from.
      shots, seeds, l2_reg: see `fewshot_accuracy`.
      batch_size: images per forward pass.
    """

    def __init__(self, model: vit.VisionTransformer, data: ml_collections.ConfigDict,
                 train_split: str, test_split: str, shots: Sequence[int] = DEFAULT_SHOTS,
                 seeds: int = DEFAULT_SEEDS, l2_reg: float = DEFAULT_L2_REG,
                 batch_size: int = 64) -> None:
        check_options(shots, seeds, l2_reg)
        self.model, self.data = model, data
        self.dataset = data.dataset
        self.splits = (train_split, test_split)
        self.shots, self.seeds, self.l2_reg = tuple(shots), seeds, l2_reg
        self.batch_size = batch_size
        self.num_classes = dataset_info.get_dataset_info(data.dataset, data.data_dir).num_classes
        for split in self.splits:  # a bad split fails now, not after minutes of features
            dataset_info.split_num_examples(data.dataset, data.data_dir, split)

    def __call__(self, params: Any, progress: bool = False) -> dict[int, list[float]]:
        """k -> per-seed accuracies of `params` (any placement; a pmap copy unreplicated).

        Args:
          params: the model's parameters (global arrays, or on one device).
          progress: print feature-extraction progress.

        Returns:
          See `fewshot_accuracy`.
        """
        params = host_params(params)
        train_split, test_split = self.splits
        train = extract_features(self.model, params, self.data, train_split, self.batch_size,
                                 progress)
        test = extract_features(self.model, params, self.data, test_split, self.batch_size,
                                progress)
        return fewshot_accuracy(*train, *test, self.num_classes, self.shots, self.seeds,
                                self.l2_reg)


def evaluator_from_config(config: ml_collections.ConfigDict,
                          model: vit.VisionTransformer) -> FewshotEvaluator | None:
    """The training run's evaluator (`config.fewshot`), or None when it is off.

    Args:
      config: the run's config; `fewshot.dataset` "" means `config.dataset`, and the
        images go through the run's eval transform (`image_size`, `eval_resize_ratio`).
      model: the module being trained.

    Returns:
      The evaluator, or None for `fewshot.every_steps` 0.
    """
    spec = config.get("fewshot")
    if spec is None or not spec.every_steps:
        return None
    if spec.every_steps < 0:
        raise ConfigError(f"config.fewshot.every_steps must be ≥ 0, got {spec.every_steps}.")
    data = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy
    data.dataset = spec.dataset or config.dataset
    return FewshotEvaluator(model, data, spec.train_split, spec.test_split, spec.shots,
                            spec.seeds, spec.l2_reg, config.eval_batch_size)


def summarize(results: dict[int, list[float]]) -> dict[str, float]:
    """{"1shot": mean accuracy over seeds, ...}: the figures to report."""
    return {shots_key(k): float(np.mean(v)) for k, v in results.items()}


def evaluate_fewshot(checkpoint: str | loading.LoadedModel, dataset: str | None = None, *,
                     data_dir: str | None = None, train_split: str = "train",
                     test_split: str = "test", shots: Sequence[int] = DEFAULT_SHOTS,
                     seeds: int = DEFAULT_SEEDS, l2_reg: float = DEFAULT_L2_REG,
                     batch_size: int = 64, progress: bool = False) -> dict[int, list[float]]:
    """Few-shot accuracies of a workdir or `.npz` on a dataset.

    Args:
      checkpoint: a training workdir, a `.npz`, or a loaded model.
      dataset: a tfds name or "folder:PATH"; None: the workdir's own dataset.
      data_dir: tfds data_dir (None: the workdir's, else tfds' default).
      train_split, test_split: tfds splits for the shots and for testing.
      shots, seeds, l2_reg: see `fewshot_accuracy`.
      batch_size: images per forward pass.
      progress: print feature-extraction progress to stderr.

    Returns:
      k -> per-seed accuracies.

    Raises:
      CheckpointError / ConfigError / DatasetError: what the message says.
    """
    check_options(shots, seeds, l2_reg)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    loaded = checkpoint
    if not isinstance(loaded, loading.LoadedModel):
        loaded = loading.load_model(checkpoint)
    own = loaded.config
    if dataset is None and own is None:
        raise ConfigError("A .npz carries no dataset: pass --dataset (e.g. --dataset digits).")
    data = ml_collections.ConfigDict({
        "dataset": dataset or own.dataset,
        "data_dir": data_dir or (own.get("data_dir") if own is not None else None),
        "image_size": loaded.image_size, "eval_resize_ratio": prediction.eval_resize_ratio(loaded),
        "prefetch": 2})
    evaluator = FewshotEvaluator(loaded.model, data, train_split, test_split, shots, seeds,
                                 l2_reg, batch_size)
    return evaluator(loaded.params, progress=progress)
