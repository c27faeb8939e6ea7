"""Training curves of a workdir (the library of `python -m vit_jax.plot`).

Reads the `history.jsonl` that training appends to (one JSON object per line:
{"step", "split": "train" | <eval split>, "loss", "accuracy" (train) / "top1" (eval), ...})
and draws two panels: the loss (log scale) and the accuracy, with the training metrics
as lines (means over each logging window) and every evaluated split as markers; a run with
few-shot evaluation (`config.fewshot`: records {"split": "fewshot", "dataset",
"1shot", "5shot", ...}) gets a third panel with one series per shot count. A run that was
resumed logs some steps twice; the later record wins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from vit_core.errors import ConfigError, WorkdirError
from vit_jax.training.history import FEWSHOT_SPLIT, HISTORY_FILE, SHOTS_KEY, TRAIN_SPLIT


def read_history(workdir: str) -> list[dict[str, Any]]:
    """The records of a workdir's `history.jsonl`, by split then step, deduplicated.

    Args:
      workdir: a training workdir.

    Returns:
      One dict per (split, step), the last one logged; sorted by step.

    Raises:
      WorkdirError: no such folder, no history in it (not a workdir), a corrupt line
        (other than a last line cut off by a crash), or no records.
    """
    if not os.path.isdir(workdir):
        raise WorkdirError(f"No workdir at {workdir}.")
    path = os.path.join(workdir, HISTORY_FILE)
    if not os.path.isfile(path):
        raise WorkdirError(
            f"{workdir} is not a training workdir with metrics (no {HISTORY_FILE}); "
            "create one with python -m vit_jax.train --config ... --workdir DIR.")
    with open(path) as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for n, line in lines:
        try:
            record = json.loads(line)
            key = (str(record["split"]), int(record["step"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            if n == lines[-1][0]:  # a crash mid-write cuts off only the last line
                continue
            raise WorkdirError(f"{path}, line {n} is not a history record: {e}") from None
        records[key] = record
    if not records:
        raise WorkdirError(f"{path} has no records yet: plot after the first logged step.")
    return sorted(records.values(), key=lambda r: (r["step"], r["split"] != TRAIN_SPLIT))


def curves(history: Sequence[dict[str, Any]]) -> dict[str, dict[str, tuple[list, list]]]:
    """The series to draw, as {panel: {label: (steps, values)}}.

    Args:
      history: records from `read_history`.

    Returns:
      {"loss": {"train": ..., <split>: ...}, "accuracy": {"train": ..., <split>: ...},
      "fewshot": {"<dataset> <k>-shot": ...}}; train accuracy is "accuracy", an eval
      split's is its top-1; "fewshot" is empty for a run without few-shot evaluation.
    """
    out: dict[str, dict[str, tuple[list, list]]] = {
        "loss": {}, "accuracy": {}, FEWSHOT_SPLIT: {}}
    for record in history:
        split = record["split"]
        if split == FEWSHOT_SPLIT:
            shots = sorted((int(m.group(1)), key) for key in record
                           if (m := SHOTS_KEY.match(key)) and record[key] is not None)
            for k, key in shots:
                label = f"{record.get('dataset', '')} {k}-shot".strip()
                steps, values = out[FEWSHOT_SPLIT].setdefault(label, ([], []))
                steps.append(record["step"])
                values.append(float(record[key]))
            continue
        acc_key = "accuracy" if split == TRAIN_SPLIT else "top1"
        for panel, key in (("loss", "loss"), ("accuracy", acc_key)):
            if record.get(key) is not None:
                steps, values = out[panel].setdefault(split, ([], []))
                steps.append(record["step"])
                values.append(float(record[key]))
    return out


def plot_curves(workdir: str, out: str, title: str | None = None) -> dict[str, Any]:
    """Writes the loss and accuracy curves (and few-shot accuracies) of a workdir to a PNG.

    Args:
      workdir: a training workdir (with `history.jsonl`).
      out: the PNG path.
      title: figure title; default: the workdir's name.

    Returns:
      The `curves` that were drawn.

    Raises:
      WorkdirError: see `read_history`; ConfigError: no folder to write `out` to.
    """
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ConfigError(f"Cannot write {out}: no folder {folder}.")
    series = curves(read_history(workdir))
    panels = 3 if series[FEWSHOT_SPLIT] else 2
    fig = Figure(figsize=(5 * panels, 3.8), dpi=100, layout="constrained")
    ax_loss, ax_acc, *ax_fewshot = fig.subplots(1, panels)
    labels = {"loss": "loss (cross-entropy)", "accuracy": "accuracy"}
    for ax, panel in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        eval_splits = [s for s in series[panel] if s != TRAIN_SPLIT]
        for split, (steps, values) in series[panel].items():
            if split == TRAIN_SPLIT:
                name = "train" if panel == "loss" else "train (batch accuracy)"
                ax.plot(steps, values, color="C0", lw=1.5, label=name)
            else:
                name = split if panel == "loss" else f"{split} top-1 (last {values[-1]:.4f})"
                color = f"C{1 + eval_splits.index(split)}"  # C0 is train's
                ax.plot(steps, values, marker="o", ms=5, lw=1, ls="--", color=color, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(labels[panel])
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8, loc="upper right" if panel == "loss" else "lower right")
    if series["loss"] and min(min(v) for _, v in series["loss"].values()) > 0:
        ax_loss.set_yscale("log")
    ax_acc.set_ylim(top=1.01)  # room for markers at 100%
    for ax in ax_fewshot:
        for i, (label, (steps, values)) in enumerate(series[FEWSHOT_SPLIT].items()):
            ax.plot(steps, values, marker="s", ms=4, lw=1, color=f"C{i}",
                    label=f"{label} (last {values[-1]:.4f})")
        ax.set_xlabel("step")
        ax.set_ylabel("linear few-shot top-1")
        ax.set_ylim(top=1.01)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title or os.path.basename(os.path.normpath(workdir)), fontsize=11)
    fig.savefig(out)
    return series
