"""`history.jsonl`: the per-step metrics a run appends to its workdir, one JSON row a line.

Rows: {"step", "split": TRAIN_SPLIT, "loss", "accuracy", ...} for training,
{"step", "split": <eval split>, "loss", "top1", ...} for an evaluation, and
{"step", "split": FEWSHOT_SPLIT, "dataset", "<k>shot": accuracy, ...} for few-shot
evaluation. `training/reporting.py` writes it; `tools/curves.py` reads it. No JAX here:
`python -m vit_jax.plot` imports this module.
"""

from __future__ import annotations

import json
import os
import re

HISTORY_FILE = "history.jsonl"
TRAIN_SPLIT = "train"
FEWSHOT_SPLIT = "fewshot"
SHOTS_KEY = re.compile(r"^(\d+)shot$")  # a few-shot row's accuracy of k shots per class


def shots_key(shots: int) -> str:
    """The key of a few-shot row's accuracy with `shots` images per class ("5shot")."""
    return f"{shots}shot"


def drop_rows_after(path: str, step: int) -> None:
    """Removes the history rows of steps after `step` (a resumed run writes them again).

    A run killed after logging step 130 but checkpointed at step 100 resumes at 100 and
    logs 110..130 once more; without this, `history.jsonl` would hold them twice. A last
    line cut off by the kill is dropped too.

    Args:
      path: the `history.jsonl` file (nothing happens if it does not exist).
      step: the step the run resumes from.
    """
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut off by a kill
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)
