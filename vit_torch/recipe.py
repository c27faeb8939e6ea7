"""The vit_jax training recipe in PyTorch: a reference for `parity/test_recipe.py`.

One optimizer step here is one `vit_jax.training.steps.make_train_step` step with the optimizer of
`vit_jax.training.optim.create_optimizer`, written with torch's own pieces where they compute the
same thing and by hand where they do not:

  schedule   `learning_rate`: linear warm-up, then cosine / linear / constant, the formula
             of `optim.create_schedule` (optax's linear, cosine and join schedules).
  mixing     `mix_batch`: Mixup / CutMix with the partner `torch.roll(x, 1, 0)` and
             smooth-then-mix soft targets (`vit_jax.data.mixup`); the coefficients and box are
             passed in (`Mix`), since the two frameworks' random numbers differ.
  loss       soft-target cross-entropy, label smoothing as `optax.smooth_labels`.
  clipping   by the global norm *before* the optimizer (optax's chain order), with
             optax's rule g·max/‖g‖ when ‖g‖ ≥ max: `torch.nn.utils.clip_grad_norm_`
             scales by max/(‖g‖ + 1e-6), a different number.
  AdamW      `torch.optim.AdamW` (p ← p·(1 − η·wd), then the Adam step; eps outside the
             square root, as optax), decay on the kernels only (`decayed_parameters`);
             "decoupled" decay is AdamW with wd/lr, as in `vit_jax.training.optim`.

Never imports jax: the configs' fields come in as a mapping (`Recipe.from_config`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from vit_core.errors import ConfigError
from vit_core.params import param_table
from vit_torch.model import VisionTransformer

ADAM_EPS = 1e-8  # optax.adamw's and torch's default; the configs have no field for it


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The optimisation fields of a vit_jax config (see `configs/default.py`)."""

    learning_rate: float
    end_learning_rate: float
    schedule: str
    warmup_steps: int
    total_steps: int
    b1: float
    b2: float
    weight_decay: float
    weight_decay_convention: str
    grad_clip_norm: float
    label_smoothing: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any], total_steps: int) -> Recipe:
        """The recipe of a vit_jax config (AdamW only; other optimizers: ConfigError).

        Args:
          config: a `configs/` ConfigDict or any mapping with the same fields.
          total_steps: optimizer steps of the run.
        """
        if config["optimizer"] != "adamw":
            raise ConfigError(f"vit_torch.recipe has AdamW only, got {config['optimizer']!r}.")
        if config["adam_mu_dtype"] not in (None, "float32"):
            raise ConfigError("torch.optim.AdamW keeps its moments in the parameters' dtype; "
                              f"adam_mu_dtype={config['adam_mu_dtype']!r} has no twin here.")
        names = [f.name for f in dataclasses.fields(cls) if f.name != "total_steps"]
        return cls(total_steps=total_steps, **{n: config[n] for n in names})


def learning_rate(step: int, recipe: Recipe) -> float:
    """`vit_jax.training.optim.create_schedule` at `step`, in float64.

    Args:
      step: the number of updates already taken.
      recipe: learning_rate, end_learning_rate, schedule, warmup_steps, total_steps.

    Returns:
      The learning rate.
    """
    peak, end = recipe.learning_rate, recipe.end_learning_rate
    warmup = min(recipe.warmup_steps, recipe.total_steps)
    decay_steps = max(recipe.total_steps - warmup, 1)
    if step < warmup:  # optax.linear_schedule(0, peak, warmup)
        return peak * step / warmup
    t = min(step - warmup, decay_steps) / decay_steps
    if recipe.schedule == "cosine":  # optax.cosine_decay_schedule(peak, D, alpha=end/peak)
        alpha = end / peak if peak else 0.0
        return peak * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * t)) + alpha)
    if recipe.schedule == "linear":  # optax.linear_schedule(peak, end, D)
        return peak + (end - peak) * t
    if recipe.schedule == "constant":
        return peak
    raise ConfigError(f"Unknown schedule {recipe.schedule!r} (cosine | linear | constant).")


@dataclasses.dataclass(frozen=True)
class Mix:
    """One batch's mixing (`vit_jax.data.mixup.MixParams` as plain numbers).

    Attributes:
      ratio: λ, the weight of each example's own label.
      box: (y0, y1, x0, x1), the region pasted from the partner under CutMix.
      cutmix: CutMix (True) or Mixup (False).
    """

    ratio: float
    box: tuple[int, int, int, int]
    cutmix: bool


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(B,) labels → (B, K) float32 one-hot, label-smoothed as `optax.smooth_labels`."""
    one_hot = F.one_hot(labels.long(), num_classes).float()  # (B, K)
    return (1.0 - smoothing) * one_hot + smoothing / num_classes if smoothing else one_hot


def mix_batch(images: torch.Tensor, labels: torch.Tensor, mix: Mix, num_classes: int,
              smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixes (B, C, H, W) images and (B,) labels with their partners (`vit_jax.data.mixup.mix`).

    Returns:
      The mixed images and (B, K) soft targets.
    """
    h, w = images.shape[-2:]
    weight = torch.full((h, w), mix.ratio, dtype=torch.float32)  # (H, W)
    if mix.cutmix:
        y0, y1, x0, x1 = mix.box
        weight = torch.ones((h, w), dtype=torch.float32)
        weight[y0:y1, x0:x1] = 0.0
    weight = weight.to(images.dtype)
    mixed = images * weight + torch.roll(images, 1, 0) * (1 - weight)  # (B, C, H, W)
    lam = torch.tensor(mix.ratio, dtype=torch.float32)
    own = soft_targets(labels, num_classes, smoothing)
    other = soft_targets(torch.roll(labels, 1, 0), num_classes, smoothing)
    return mixed, lam * own + (1 - lam) * other


def decayed_parameters(model: VisionTransformer) -> set[str]:
    """Names of the parameters that weight decay applies to: those whose npz keys are
    kernels, the rule of `vit_jax.training.optim.decays` (through the converter's name map)."""
    return {p.timm_key for p in param_table(model.spec)
            if all(k.endswith("kernel") for k in p.npz_keys)}


def clip_by_global_norm_(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """optax.clip_by_global_norm on `.grad` in place: g·max/‖g‖ if ‖g‖ ≥ max.

    Returns:
      ‖g‖ before clipping.
    """
    norm = torch.sqrt(sum(torch.sum(p.grad * p.grad) for p in params))
    if norm >= max_norm:
        for p in params:
            p.grad.copy_(p.grad / norm * max_norm)
    return float(norm)


class Trainer:
    """The recipe's optimizer steps on a torch model.

    Args:
      model: the model to train (in place).
      recipe: its hyper-parameters.
    """

    def __init__(self, model: VisionTransformer, recipe: Recipe) -> None:
        if recipe.weight_decay_convention not in ("lr_scaled", "decoupled"):
            raise ConfigError("weight_decay_convention must be 'lr_scaled' or 'decoupled', "
                              f"got {recipe.weight_decay_convention!r}.")
        self.model, self.recipe, self.step_count = model, recipe, 0
        wd = recipe.weight_decay
        if recipe.weight_decay_convention == "decoupled" and wd:
            wd = wd / recipe.learning_rate  # torch multiplies by η(t): η(t)·wd/lr = σ(t)·wd
        decayed = decayed_parameters(model)
        named = list(model.named_parameters())
        self.params = [p for _, p in named]
        groups = [{"params": [p for n, p in named if n in decayed], "weight_decay": wd},
                  {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=0.0, betas=(recipe.b1, recipe.b2),
                                           eps=ADAM_EPS)

    def step(self, images: torch.Tensor, labels: torch.Tensor, mix: Mix | None = None
             ) -> float:
        """One update on a (B, C, H, W) batch, mixed by `mix` if given.

        Returns:
          The batch's mean loss (before the update), as `make_train_step` reports it.
        """
        num_classes = self.model.num_classes
        if mix is None:
            targets = soft_targets(labels, num_classes, self.recipe.label_smoothing)
        else:
            images, targets = mix_batch(images, labels, mix, num_classes,
                                        self.recipe.label_smoothing)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(images)  # (B, K)
        loss = -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()
        loss.backward()
        if self.recipe.grad_clip_norm:
            with torch.no_grad():
                clip_by_global_norm_(self.params, self.recipe.grad_clip_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step_count, self.recipe)
        self.optimizer.step()
        self.step_count += 1
        return loss.item()
