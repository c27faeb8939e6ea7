"""The training half of the parity harness: loss gradients and optimizer steps.

Same weights (made in Flax, moved to torch through the `.npz` file), same batch; both
frameworks back-propagate the mean cross-entropy, then AdamW and SGD with momentum take
one step on each framework's own gradients and two steps on the same (Flax's) gradients.
Results are compared in the official npz layout (torch tensors mapped by
`vit_torch.convert.state_dict_to_npz`, the converter's own name map).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
import torch
import torch.nn.functional as F

from parity import harness, weights
from parity.cases import Case
from parity.weights import Flat, Params
from vit_jax.weights import checkpoint
from vit_torch import convert
from vit_torch.model import VisionTransformer as TorchViT

# Hyper-parameters given to both libraries. AdamW: optax puts eps outside the square root
# (eps_root=0) like torch, and both decay every parameter, decoupled from the gradient
# (optax `mask=None`; torch one param group). SGD: torch dampening=0, nesterov=False is
# optax's `trace` (buf = g + momentum·buf).
ADAMW = dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05)
SGD = dict(lr=0.1, momentum=0.9)
OPTIMIZERS = ("adamw", "sgd")
# Both optimizers fed the same gradients for two steps (the momentum buffer and the Adam
# moments carry over), and each fed its own framework's gradients for one step.
SAME_GRAD_STEPS = 2

# The query·(key + b) logits of one query shift by the same q·b for every key, which the
# softmax cancels: the loss does not depend on the key bias and its exact gradient is 0.
# Both frameworks return float32 round-off there (~1e-8), so those gradients are measured
# against the largest gradient of the model, and their (round-off) steps are not compared.
ZERO_GRAD = re.compile(r"/key/bias$")
# One Adam step is lr·g/(|g| + eps): its slope eps/(|g| + eps)² is 1/(4 eps) at |g| = eps,
# so where |g| is near eps the frameworks' float32 round-off of g (~1e-8 of a tensor's
# largest gradient) becomes a visible step difference (measured: 1e-3 of the step at
# |g| = 3e-8, 4e-4 on Ti/16 at |g| = 1e-6). Where |g| ≥ 1e4·eps the slope is ≤ 1, no
# worse than SGD's: the own-gradient AdamW step is compared there (about 90-95% of the
# elements); the same-gradient steps cover every element.
ADAM_WELL_CONDITIONED = 1e4 * ADAMW["eps"]
_F32_EPS = float(np.finfo(np.float32).eps)
STEP_ULPS = 2


def adam_bias_correction_rel(steps: int = SAME_GRAD_STEPS) -> float:
    """optax's Adam step error from its float32 bias corrections, relative to the step.

    optax computes 1 − β^t in float32: fl32(0.999) = 0.999 + 1.3e-8, which 1 − β^t ≈ 1e-3
    magnifies to a 1.3e-5 (t=1) and 2e-5 (t=2) relative error; the step scales with
    (1 − β2^t)^½/(1 − β1^t), i.e. ½ that. torch computes them in float64.
    """
    def rel(beta: float, t: int) -> float:
        return abs(float(1 - np.float32(beta) ** t) - (1 - beta**t)) / (1 - beta**t)

    return max(0.5 * rel(ADAMW["b2"], t) + rel(ADAMW["b1"], t) for t in range(1, steps + 1))


# Per tensor: max |Δ grad| / max |grad| (issue: 1e-4). Measured worst 1.9e-5 (Ti/16
# query kernels, 12 blocks deep); the testing variant 1.8e-6.
GRAD_REL = 1e-4
# Steps (`step_excess`, relative to the step). Same gradients: AdamW is optax's float32
# bias correction (1.0e-5, measured 8.5e-6) + 5e-6 for rounding; SGD measured 4e-8.
# Own gradients, one step: SGD's step is lr·g, its error the gradients' (measured 1.4e-5);
# AdamW's is the t=1 bias correction (6.4e-6, measured 6.9e-6) + 5e-6.
STEP_REL = {"adamw": adam_bias_correction_rel() + 5e-6, "sgd": 1e-6}
OWN_STEP_REL = {"adamw": adam_bias_correction_rel(1) + 5e-6, "sgd": GRAD_REL}


def random_labels(case: Case, seed: int) -> np.ndarray:
    """(B,) int32 class labels."""
    return np.random.default_rng(2000 + seed).integers(0, case.num_classes, case.batch, np.int32)


@functools.cache
def _flax_loss_grad_fn(case: Case) -> Callable[..., Any]:
    """Jitted (loss, grads) of the mean cross-entropy, built once per case."""
    model = weights.flax_model(case)

    def loss_fn(params: Params, images: jax.Array, labels: jax.Array) -> jax.Array:
        logits = model.apply({"params": params}, images)  # (B, classes)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return jax.jit(jax.value_and_grad(loss_fn))


def optax_optimizer(name: str) -> optax.GradientTransformation:
    """"adamw" or "sgd" with the hyper-parameters of `ADAMW` / `SGD`."""
    if name == "adamw":
        return optax.adamw(ADAMW["lr"], b1=ADAMW["b1"], b2=ADAMW["b2"], eps=ADAMW["eps"],
                           weight_decay=ADAMW["weight_decay"])
    return optax.sgd(SGD["lr"], momentum=SGD["momentum"], nesterov=False)


def torch_optimizer(name: str, params: Any) -> torch.optim.Optimizer:
    """The torch twin of `optax_optimizer(name)`."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=ADAMW["lr"], betas=(ADAMW["b1"], ADAMW["b2"]),
                                 eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"])
    return torch.optim.SGD(params, lr=SGD["lr"], momentum=SGD["momentum"], dampening=0.0,
                           nesterov=False)


@functools.cache
def _flax_update_fn(name: str) -> Callable[..., Any]:
    """Jitted optimizer update + apply, built once per optimizer."""
    tx = optax_optimizer(name)

    def update(params: Params, state: Any, grads: Params) -> tuple[Params, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(update)


def flax_train(case: Case, params: Params, grads: Params, images: np.ndarray,
               labels: np.ndarray, name: str) -> tuple[list[Flat], list[Flat]]:
    """`SAME_GRAD_STEPS` optax steps on one batch, starting from `grads` (those of `params`).

    Returns:
      The params after each step and the gradient each step used, in npz layout.
    """
    state, after, grads_used = optax_optimizer(name).init(params), [], []
    for step in range(SAME_GRAD_STEPS):
        if step:
            _, grads = _flax_loss_grad_fn(case)(params, images, labels)
        grads_used.append(checkpoint.params_to_npz_dict(grads))
        params, state = _flax_update_fn(name)(params, state, grads)
        after.append(checkpoint.params_to_npz_dict(params))
    return after, grads_used


def torch_loss_grad(model: TorchViT, images: np.ndarray, labels: np.ndarray
                    ) -> tuple[float, Flat]:
    """Mean cross-entropy and its gradients (mapped to npz layout) in torch."""
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(harness.to_nchw(images)), torch.from_numpy(labels).long())
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    return loss.item(), weights.torch_to_npz(grads, model)


def torch_train(model: TorchViT, name: str, grads: Sequence[Flat]) -> Flat:
    """One torch optimizer step per npz-layout gradient in `grads`, on a copy of `model`.

    The gradients are mapped to torch names by the converter (`npz_to_state_dict`);
    torch's own are `torch_loss_grad`'s, mapped the other way and back (bit-exact).

    Returns:
      The new params in npz layout.
    """
    model = copy.deepcopy(model)
    opt = torch_optimizer(name, model.parameters())
    params = dict(model.named_parameters())
    for step_grads in grads:
        for key, g in convert.npz_to_state_dict(step_grads).items():
            params[key].grad = g
        opt.step()
    return weights.torch_to_npz(model.state_dict(), model)


def step_excess(torch_p: np.ndarray, flax_p: np.ndarray, step: float) -> float:
    """Parameter difference after the steps, relative to the step, beyond float32 rounding.

    max(|Δp| − STEP_ULPS·eps·|p|, 0) / step, with step = max |p_flax − p_before|. Both
    libraries round the new weight once or twice (torch multiplies by 1 − lr·wd first):
    that alone is 1e-4 of a 1e-3 step on a LayerNorm scale of 1. It is the quantity
    `chex.assert_trees_all_close(rtol=STEP_ULPS·eps, atol=bound·step)` tests.
    """
    diff = np.abs(torch_p - flax_p) - STEP_ULPS * _F32_EPS * np.abs(flax_p)
    worst = max(float(np.max(diff)), 0.0)
    # A step below half an ulp leaves the weight unchanged (a key bias under SGD).
    return worst / step if worst else 0.0


@dataclasses.dataclass
class TrainPair:
    """Loss, gradients and optimizer results of the same weights in both frameworks.

    Attributes:
      loss: (flax, torch) mean cross-entropy.
      grads: (flax, torch) gradients, npz layout.
      before: the common starting weights, npz layout.
      own: optimizer → (flax, torch) weights after one step, each on its own gradients.
      same: optimizer → (flax, torch) weights after `SAME_GRAD_STEPS` steps, torch fed
        Flax's gradients.
    """

    loss: tuple[float, float]
    grads: tuple[Flat, Flat]
    before: Flat
    own: dict[str, tuple[Flat, Flat]]
    same: dict[str, tuple[Flat, Flat]]

    def grad_scale(self, key: str) -> float:
        """What a gradient's error is measured against: its own max |g|, or for the
        analytically-zero key biases (`ZERO_GRAD`) the largest gradient of the model."""
        if ZERO_GRAD.search(key):
            return max(float(np.max(np.abs(g))) for g in self.grads[0].values())
        return float(np.max(np.abs(self.grads[0][key])))

    def grad_rel(self) -> dict[str, float]:
        """Per parameter: max |Δ grad| / `grad_scale`."""
        flax_g, torch_g = self.grads
        return {k: float(np.max(np.abs(torch_g[k] - g))) / self.grad_scale(k)
                for k, g in flax_g.items()}

    def step_compare(self, name: str, same_grads: bool) -> tuple[Flat, Flat, dict[str, float]]:
        """(torch weights, flax weights, each tensor's step size) after the `name` steps.

        With their own gradients the key biases are left out (steps on round-off, see
        `ZERO_GRAD`) and for AdamW the elements with |g| < `ADAM_WELL_CONDITIONED` are
        set equal (see there).
        """
        flax_p, torch_p = (self.same if same_grads else self.own)[name]
        got, want, step = {}, {}, {}
        for k, p in flax_p.items():
            if not same_grads and ZERO_GRAD.search(k):
                continue
            got[k] = torch_p[k]
            if name == "adamw" and not same_grads:
                got[k] = np.where(np.abs(self.grads[0][k]) >= ADAM_WELL_CONDITIONED, got[k], p)
            want[k], step[k] = p, float(np.max(np.abs(p - self.before[k])))
        return got, want, step

    def step_rel(self, name: str, same_grads: bool) -> dict[str, float]:
        """Per parameter: `step_excess` after the `name` steps (see `step_compare`)."""
        got, want, step = self.step_compare(name, same_grads)
        return {k: step_excess(got[k], want[k], step[k]) for k in want}


def measure_training(case: Case, seed: int = 0) -> TrainPair:
    """Random Flax weights → npz → torch; gradients and optimizer steps on one batch.

    Flax back-propagates 1 + `SAME_GRAD_STEPS` − 1 times per optimizer (the first
    gradient is shared), torch once: its optimizer steps are fed gradients.
    """
    images, labels = weights.random_images(case, seed), random_labels(case, seed)
    params = weights.init_flax(case, seed)
    model = weights.flax_to_torch(case, params)
    loss, grads = _flax_loss_grad_fn(case)(params, images, labels)
    torch_loss, torch_grads = torch_loss_grad(model, images, labels)
    own, same = {}, {}
    for name in OPTIMIZERS:
        flax_after, flax_grads = flax_train(case, params, grads, images, labels, name)
        own[name] = flax_after[0], torch_train(model, name, [torch_grads])
        same[name] = flax_after[-1], torch_train(model, name, flax_grads)
    return TrainPair((float(loss), torch_loss), (flax_grads[0], torch_grads),
                     checkpoint.params_to_npz_dict(params), own, same)
