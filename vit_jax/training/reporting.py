"""Metrics out of the loop: TensorBoard events, a console progress line, a JSONL history."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np

from vit_jax.data.dataset_info import import_tensorflow
from vit_jax.training.history import FEWSHOT_SPLIT, HISTORY_FILE, TRAIN_SPLIT, drop_rows_after


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class EventsWriter:
    """Scalars into a TensorBoard events file of `workdir`, with TensorFlow's own writer.

    Not clu's writer: it imports TensorBoard's hparams plugin, which subclasses a Keras
    callback and so loads Keras and IPython (3 s of every training start).

    Args:
      workdir: the events file goes here (TensorBoard reads the folder).
    """

    def __init__(self, workdir: str) -> None:
        self.tf = import_tensorflow()
        self.writer = self.tf.summary.create_file_writer(workdir)

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Writes each scalar at `step` and flushes (a run may be killed at any time).

        Args:
          step: the training step the values belong to.
          scalars: tag (e.g. "train/loss") → value.
        """
        with self.writer.as_default(step=step):
            for name, value in scalars.items():
                self.tf.summary.scalar(name, float(value))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Reporter:
    """Writes train/eval metrics; only process 0 writes files.

    Args:
      workdir: TensorBoard events and `history.jsonl` go here.
      total_steps: for the ETA.
      batch_size: global images per step, for images/s.
      start_step: the step the run (re)starts from.
    """

    def __init__(self, workdir: str, total_steps: int, batch_size: int, start_step: int) -> None:
        self.is_main = jax.process_index() == 0
        self.writer = EventsWriter(workdir) if self.is_main else None
        path = os.path.join(workdir, HISTORY_FILE)
        if self.is_main:
            drop_rows_after(path, start_step)
        # Open for the reporter's lifetime (closed in close()); appended to on resume.
        self.history = open(path, "a") if self.is_main else None  # noqa: SIM115
        self.total_steps, self.batch_size, self.start_step = total_steps, batch_size, start_step
        self.t0 = self.t_last = time.time()
        self.last_step = start_step
        self.window: list[dict[str, float]] = []
        self.last_train: dict[str, float] = {}
        self.rates: list[float] = []

    def train(self, metrics: list[tuple[int, dict[str, Any]]], *, log: bool) -> None:
        """Accumulates per-step metrics; on `log`, writes their mean and prints a line."""
        self.window += [{k: float(np.asarray(v)) for k, v in m.items()} for _, m in metrics]
        if not log or not metrics:
            return
        step = metrics[-1][0]
        now = time.time()
        rate = (step - self.last_step) * self.batch_size / max(now - self.t_last, 1e-9)
        # The first window includes compilation; it is not a throughput figure.
        if self.last_step > self.start_step:
            self.rates.append(rate)
        mean = {k: float(np.mean([w[k] for w in self.window])) for k in self.window[0]}
        mean["images_per_second"] = rate
        self._scalars(step, {f"train/{k}": v for k, v in mean.items()})
        self._append({"step": step, "split": TRAIN_SPLIT, **mean})
        eta = (self.total_steps - step) * (now - self.t0) / max(step - self.start_step, 1)
        if self.is_main:
            print(f"step {step:>6d}/{self.total_steps} | loss {mean['loss']:.4f} | "
                  f"acc {mean['accuracy']:.3f} | lr {mean['learning_rate']:.2e} | "
                  f"{rate:8.1f} img/s | ETA {_duration(eta)}", flush=True)
        self.last_train, self.window = mean, []
        self.t_last, self.last_step = now, step

    def eval(self, step: int, split: str, result: dict[str, float]) -> None:
        """Writes and prints one evaluation."""
        scalars = {f"{split}/{k}": v for k, v in result.items() if k != "num_examples"}
        self._scalars(step, scalars)
        self._append({"step": step, "split": split, **result})
        if self.is_main:
            print(f"eval  {step:>6d} | {split}: top-1 {result['top1']:.4f} | "
                  f"top-5 {result['top5']:.4f} | loss {result['loss']:.4f} | "
                  f"{result['num_examples']} examples", flush=True)

    def fewshot(self, step: int, dataset: str, accuracies: dict[str, float]) -> None:
        """Writes and prints few-shot accuracies ({"5shot": mean top-1, ...}) of a dataset."""
        self._scalars(step, {f"fewshot/{dataset}_{k}": v for k, v in accuracies.items()})
        self._append({"step": step, "split": FEWSHOT_SPLIT, "dataset": dataset, **accuracies})
        if self.is_main:
            line = " | ".join(f"{k} {v:.4f}" for k, v in accuracies.items())
            print(f"eval  {step:>6d} | few-shot {dataset}: {line}", flush=True)

    def summary(self) -> dict[str, Any]:
        """Throughput (median over logged windows after the first) and last train metrics."""
        return {"train": self.last_train,
                "images_per_second": float(np.median(self.rates)) if self.rates else None}

    def _scalars(self, step: int, scalars: dict[str, float]) -> None:
        if self.writer:
            self.writer.write_scalars(step, scalars)

    def _append(self, record: dict[str, Any]) -> None:
        if self.history:
            self.history.write(json.dumps(record) + "\n")
            self.history.flush()

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        if self.history:
            self.history.close()
            self.history = None
