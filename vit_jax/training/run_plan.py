"""How long a run trains and on which splits: its config resolved against the data.

A config file sets a recipe for the dataset it names (the ImageNet configs hold out
`train[99%:]` for model selection and report ImageNet's `validation` as the test split);
the command line changes a few fields of it. Two rules decide what a run does (also
documented in configs/default.py):

  * Duration. `num_epochs`, when not None, is converted to optimizer steps
    (ceil(epochs × train examples / batch_size)); otherwise `num_train_steps` is used. A
    value given on the command line (`--config.num_train_steps` or `--config.num_epochs`)
    wins over the config file's, whichever of the two fields the file set.
  * Splits. A split field given on the command line is used as given. Otherwise a
    `folder:` dataset uses its own splits: train/ to train, val/ (or the part held out
    of train/) to evaluate, test/ to test when it exists. A tfds dataset uses the
    config's split string where the dataset has every split it names, and else its own
    split for that role ("train", "validation", "test"; none when it has no such split).

`Origin` says which fields the command line set (ml_collections' `config_flags` knows);
`resolve` applies the rules, writes the result into the config (so the workdir's
config.json records the splits and duration the run really used) and returns a `Plan`
whose `describe()` is the start-up line.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import ml_collections
from ml_collections import config_flags

from vit_core.errors import ConfigError
from vit_jax.data import folder

# Split field → the split a dataset calls its own for that role.
SPLIT_ROLES = {"train_split": "train", "eval_split": "validation", "test_split": "test"}
_NO_SPLIT = ("", "None")  # what `--config.test_split=` / `=None` give (a string, not None)


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where the values of a run's config came from.

    Attributes:
      config_file: the config file as given (e.g. "configs/b16.py" or
        "configs/s16_i1k.py:runlocal"); None for a config built in code.
      explicit: dotted names of the fields set on top of the file for this run (the
        command line's `--config.FIELD=...`); they win over the file's values.
    """

    config_file: str | None = None
    explicit: frozenset[str] = frozenset()

    @classmethod
    def from_flag(cls, flag: Any) -> Origin:
        """The origin of a parsed `config_flags.DEFINE_config_file` flag.

        Args:
          flag: the flag object, e.g. `absl.flags.FLAGS["config"]`.

        Returns:
          Its file (with the ":arg" part) and the fields set by `--config.FIELD=...`.
        """
        return cls(config_file=config_flags.get_config_filename(flag),
                   explicit=frozenset(config_flags.get_override_values(flag)))

    def file_value(self, field: str, value: object) -> str:
        """E.g. "num_epochs=90 in configs/b16.py"."""
        shown = f"{value:g}" if isinstance(value, float) else repr(value)
        return f"{field}={shown} in {self.config_file or 'the config'}"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the run does, and why.

    Attributes:
      total_steps: optimizer steps of the whole run.
      steps_from: where that number came from, e.g. "--config.num_train_steps" or
        "num_epochs=90 in configs/b16.py: 90 × 1,281,167 / 4096".
      splits: split field → the split used (None: no such evaluation).
      splits_from: why the splits differ from the config's, or "" when they do not.
      num_train_examples: examples in the train split.
    """

    total_steps: int
    steps_from: str
    splits: Mapping[str, str | None]
    splits_from: str
    num_train_examples: int

    def describe(self) -> str:
        """The start-up line, e.g. "3,000 steps (--config.num_train_steps); train 'train' ..."."""
        train, evals, test = (self.splits[f] for f in SPLIT_ROLES)
        parts = [f"train {train!r} ({self.num_train_examples:,} examples)",
                 f"eval {evals!r}" if evals else "no eval split",
                 f"test {test!r}" if test else "no test split"]
        why = f" ({self.splits_from})" if self.splits_from else ""
        return f"{self.total_steps:,} steps ({self.steps_from}); {', '.join(parts)}{why}"


def _split_value(value: str | None) -> str | None:
    return None if value is None or value.strip() in _NO_SPLIT else value


def _split_names(split: str) -> list[str]:
    """The splits a split string reads: "train[:90%]+validation" → ["train", "validation"]."""
    return [part.strip().split("[")[0] for part in split.split("+")]


def resolve_splits(config: ml_collections.ConfigDict, available: Collection[str],
                   origin: Origin) -> tuple[dict[str, str | None], str]:
    """The split of each role (train, eval, test), by the rule in the module docstring.

    Args:
      config: the run's config (read only).
      available: the dataset's split names (empty: unknown, the config's strings are kept).
      origin: which fields the command line set.

    Returns:
      (split field → split or None, why they differ from the config's, or "").
    """
    is_folder = config.dataset.startswith(folder.PREFIX)
    splits: dict[str, str | None] = {}
    changes = []
    for field, own in SPLIT_ROLES.items():
        value = _split_value(config[field])
        if field in origin.explicit or not available:
            splits[field] = value
            continue
        if is_folder:
            chosen = own if own in available else None
        elif value is None or all(name in available for name in _split_names(value)):
            chosen = value
        else:
            chosen = own if own in available else None
        if field == "train_split" and chosen is None:
            chosen = value  # no train split: opening it says so, with the dataset's splits
        splits[field] = chosen
        if chosen != value:
            changes.append(f"{field} {value!r} → {chosen!r}")
    if not changes:
        return splits, ""
    source = origin.config_file or "the config"
    why = ("the folder's own splits" if is_folder
           else f"{config.dataset!r} lacks a split that {source} names")
    return splits, f"{', '.join(changes)}: {why}"


def train_steps(config: ml_collections.ConfigDict, num_train_examples: int,
                origin: Origin) -> tuple[int, str, bool]:
    """The run's optimizer steps and where the number came from (the duration rule).

    Args:
      config: the run's config (read only).
      num_train_examples: examples in the train split.
      origin: which fields the command line set.

    Returns:
      (steps, where they came from, whether they came from `num_epochs`).

    Raises:
      ConfigError: both fields were given on the command line, or the result is not a
        positive number of steps.
    """
    given = {"num_train_steps", "num_epochs"} & origin.explicit
    if len(given) == 2:
        raise ConfigError("--config.num_train_steps and --config.num_epochs were both given; "
                          "give one (either wins over the config file's duration).")
    use_epochs = "num_epochs" in given or (not given and config.num_epochs is not None)
    if use_epochs:
        epochs = config.num_epochs
        steps = math.ceil(epochs * num_train_examples / config.batch_size)
        where = "--config.num_epochs" if given else origin.file_value("num_epochs", epochs)
        why = f"{where}: {epochs:g} × {num_train_examples:,} / {config.batch_size:,}"
    else:
        steps = config.num_train_steps
        why = ("--config.num_train_steps" if given
               else origin.file_value("num_train_steps", steps))
    if steps < 1:
        raise ConfigError(f"The run would train {steps} steps ({why}); give a positive "
                          "--config.num_train_steps or --config.num_epochs.")
    return steps, why, use_epochs


def resolve(config: ml_collections.ConfigDict, available: Collection[str],
            count: Callable[[str], int], origin: Origin) -> Plan:
    """Applies both rules and writes the result into `config` (changed in place).

    When steps win, `num_epochs` is cleared, so that the workdir's config.json holds the
    duration the run used.

    Args:
      config: the run's config.
      available: the dataset's split names.
      count: split string → examples in it (`dataset_info.split_num_examples`).
      origin: which fields the command line set.

    Returns:
      The Plan.

    Raises:
      ConfigError: see `train_steps`.
    """
    splits, splits_from = resolve_splits(config, available, origin)
    for field, split in splits.items():
        # Only a real change is written: "" and None both say "no split", and a workdir
        # keeps comparing equal to the config that made it.
        if split != _split_value(config[field]):
            config[field] = split
    num_train_examples = count(config.train_split)
    steps, steps_from, from_epochs = train_steps(config, num_train_examples, origin)
    if not from_epochs:
        config.num_epochs = None  # steps won: record the duration actually used
    # From epochs, num_train_steps stays as the file set it (unused): workdirs written
    # before this rule hold that value, and must still resume.
    return Plan(total_steps=steps, steps_from=steps_from, splits=splits,
                splits_from=splits_from, num_train_examples=num_train_examples)
