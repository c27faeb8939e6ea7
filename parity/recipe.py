"""The training recipe in both frameworks: 20 optimizer steps on the same batches.

One `.npz` of weights (the Flax init, `parity.weights.randomise`d) is loaded by both
sides; one `.npz` of batches holds the images, labels and each step's mixing (λ, CutMix
box, which of the two), drawn by `vit_jax.data.mixup.sample` from the step keys the Flax
train step uses and handed to torch as numbers (the two frameworks' RNGs differ).
Flax runs the real `vit_jax.training.steps.make_train_step` with
`vit_jax.training.optim.create_optimizer`;
torch runs `vit_torch.recipe.Trainer`. The loss of every step and every parameter at the
end are compared.

Cases: the S/16 ImageNet recipe of `configs/s16_i1k.py` ("decoupled" weight decay,
Mixup 0.2, "gap" + pre-logits + sincos2d position embeddings) and the B/16 one of
`configs/b16.py` ("lr_scaled" weight decay 0.3) with label smoothing 0.1 and Mixup 0.8 /
CutMix 1.0 switched per batch; both on the "testing" model at 32² with 10 classes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
import torch

from configs import b16, s16_i1k
from parity.harness import LOGITS_REL, to_nchw
from parity.training import ZERO_GRAD, adam_bias_correction_rel
from parity.weights import Flat, randomise
from vit_core import layouts
from vit_jax.data import mixup
from vit_jax.model import vit as models
from vit_jax.training.optim import create_optimizer
from vit_jax.training.state import TrainState
from vit_jax.training.steps import make_train_step
from vit_jax.weights import checkpoint
from vit_torch import convert, recipe
from vit_torch import model as torch_vit

STEPS, BATCH, IMAGE, NUM_CLASSES = 20, 8, 32, 10
_EPS32 = float(np.finfo(np.float32).eps)


def _shrunk(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    config.model.variant, config.model.dtype = "testing", "float32"
    if config.model.representation_size is not None:  # "as wide as the model"
        config.model.representation_size = 32
    config.image_size, config.batch_size = IMAGE, BATCH
    config.num_epochs, config.num_train_steps, config.warmup_steps = None, STEPS, 5
    return config


def s16_i1k_config() -> ml_collections.ConfigDict:
    """configs/s16_i1k.py on the testing model, float32 Adam moments (torch's AdamW
    keeps them in the parameters' dtype; big_vision's are bfloat16)."""
    config = _shrunk(s16_i1k.get_config())
    config.adam_mu_dtype = None
    return config


def b16_config() -> ml_collections.ConfigDict:
    """configs/b16.py on the testing model, with label smoothing and Mixup/CutMix, and
    without dropout (torch cannot draw Flax's dropout masks)."""
    config = _shrunk(b16.get_config())
    config.model.dropout_rate = 0.0
    config.label_smoothing = 0.1
    config.mixup_alpha, config.cutmix_alpha = 0.8, 1.0
    return config


CASES: dict[str, Callable[[], ml_collections.ConfigDict]] = {
    "s16_i1k": s16_i1k_config, "b16+smoothing+cutmix": b16_config}


@dataclasses.dataclass
class RecipeRun:
    """Both frameworks' 20 steps.

    Attributes:
      losses: (flax, torch), each (STEPS,) the loss of every step.
      before: the common starting weights, npz layout.
      after: (flax, torch) the weights after the last step, npz layout.
    """

    losses: tuple[np.ndarray, np.ndarray]
    before: Flat
    after: tuple[Flat, Flat]

    def loss_rel(self) -> np.ndarray:
        """(STEPS,) |Δ loss| / |flax loss| per step."""
        flax, torch_ = self.losses
        return np.abs(torch_ - flax) / np.abs(flax)

    def moved(self, key: str) -> float:
        """max |p_end − p_start| of a tensor in Flax: what its difference is measured by."""
        return float(np.max(np.abs(self.after[0][key] - self.before[key])))

    def compared_keys(self) -> list[str]:
        """Every parameter but the key biases: softmax cancels them, their gradient is
        float32 round-off (`parity.training.ZERO_GRAD`), which Adam turns into lr-sized
        steps of random sign in each framework. They do not change the loss."""
        return [k for k in self.before if not ZERO_GRAD.search(k)]

    def param_rel(self) -> dict[str, float]:
        """Per tensor: max(|Δ p_end| − ROUND_ULPS·eps·|p_end|, 0) / `moved` (the quantity
        bounded by PARAM_REL)."""
        flax, torch_ = self.after
        out = {}
        for k in self.compared_keys():
            excess = np.abs(torch_[k] - flax[k]) - ROUND_ULPS * _EPS32 * np.abs(flax[k])
            out[k] = max(float(np.max(excess)), 0.0) / self.moved(k)
        return out


def batches(config: ml_collections.ConfigDict, seed: int = 0) -> dict[str, np.ndarray]:
    """Images, labels and each step's mixing, as stored in the shared `.npz`."""
    rng = np.random.default_rng(seed)
    out = {"image": rng.uniform(-1, 1, (STEPS, BATCH, IMAGE, IMAGE, 3)).astype(np.float32),
           "label": rng.integers(0, NUM_CLASSES, (STEPS, BATCH)).astype(np.int32)}
    if mixup.enabled(config):
        draws = [mixup.sample(mixup.step_key(config.seed, t), config, IMAGE, IMAGE)
                 for t in range(STEPS)]
        for name in mixup.MixParams._fields:
            out[f"mix_{name}"] = np.stack([np.asarray(getattr(d, name)) for d in draws])
    return out


def run_flax(config: ml_collections.ConfigDict, weights: str, data: dict[str, np.ndarray]
             ) -> tuple[np.ndarray, Flat]:
    """The real train step, jitted, on each stored batch (it draws the same mixing)."""
    model = models.model_from_config(config.model, NUM_CLASSES, IMAGE)
    tx, schedule = create_optimizer(config, STEPS)
    state = TrainState.create(model, tx, config, pretrained=checkpoint.load_npz(weights))
    step = jax.jit(make_train_step(model, tx, schedule, config))
    losses = []
    for t in range(STEPS):
        state, metrics = step(state, {"image": data["image"][t], "label": data["label"][t]})
        losses.append(float(metrics["loss"]))
    return np.asarray(losses), checkpoint.params_to_npz_dict(jax.device_get(state.params))


def run_torch(config: ml_collections.ConfigDict, weights: str, data: dict[str, np.ndarray]
              ) -> tuple[np.ndarray, Flat]:
    """`vit_torch.recipe.Trainer` on the same batches, given the stored mixing."""
    # The same spec as the Flax model's; the run options torch's model takes, from the config.
    spec = models.model_from_config(config.model, NUM_CLASSES, IMAGE).spec
    run = {k: config.model[k] for k in torch_vit.RUN_KEYWORDS if k in config.model}
    with torch.device("meta"):
        model = torch_vit.VisionTransformer(spec, **run)
    model = convert.load_npz(model.to_empty(device="cpu"), weights)
    trainer = recipe.Trainer(model, recipe.Recipe.from_config(config, STEPS))
    losses = []
    for t in range(STEPS):
        mix = None
        if "mix_ratio" in data:
            mix = recipe.Mix(float(data["mix_ratio"][t]),
                             tuple(int(v) for v in data["mix_box"][t]),
                             bool(data["mix_cutmix"][t]))
        losses.append(trainer.step(to_nchw(data["image"][t]),
                                   torch.from_numpy(data["label"][t]), mix))
    return np.asarray(losses), layouts.timm_to_official(convert.to_numpy(model.state_dict()),
                                                         model.spec)


@functools.cache
def measure_recipe(name: str, seed: int = 0) -> RecipeRun:
    """Both frameworks through `STEPS` steps of the named case (`CASES`), from one npz of
    weights and one npz of batches."""
    config = CASES[name]()
    model = models.model_from_config(config.model, NUM_CLASSES, IMAGE)
    images = np.zeros((1, IMAGE, IMAGE, 3), np.float32)
    params = jax.jit(lambda key: model.init(key, images)["params"])(jax.random.key(seed))
    before = randomise(checkpoint.params_to_npz_dict(params), seed)
    with tempfile.TemporaryDirectory() as tmp:
        weights, data_path = os.path.join(tmp, "weights.npz"), os.path.join(tmp, "batches.npz")
        checkpoint.save_npz(weights, checkpoint.npz_dict_to_params(before))
        np.savez(data_path, **batches(config, seed))
        with np.load(data_path, allow_pickle=False) as f:
            data = dict(f)
        flax_losses, flax_after = run_flax(config, weights, data)
        torch_losses, torch_after = run_torch(config, weights, data)
    return RecipeRun((flax_losses, torch_losses), before, (flax_after, torch_after))


# Bounds. Loss, per step, |Δ| / |loss|: the forward bound `harness.LOGITS_REL` (the loss
# is a function of the logits; after 20 steps the weights differ by ~1e-6 of their size,
# well inside it). Measured worst 4.8e-7 (b16 case), 4 float32 ulps.
LOSS_REL = LOGITS_REL
# Parameters after 20 steps, per tensor: |Δ| ≤ PARAM_REL · max |p_end − p_start| (the
# movement) + ROUND_ULPS float32 ulps of the weight, element-wise.
# ROUND_ULPS: every step rounds each weight once in optax (p + u) and once or twice in
# torch (p·(1 − η·wd), then the Adam step): ≤ 1.5 ulp of difference per step, of random
# sign, a random walk of ~√20 ≈ 4 ulps over 20 steps. Small steps on O(1) weights (the
# S/16 case moves LayerNorm scales by 4e-3) make these ulps a visible share of the
# movement: without them its worst is 3.2e-5, with 4 ulps 1.5e-5.
# PARAM_REL, measured causes: optax computes Adam's bias corrections 1 − β^t in float32,
# an error of up to 1.0e-5 of every step (`training.adam_bias_correction_rel`; torch uses
# float64): with exactly representable betas (0.5, 0.75) the b16 case's worst drops from
# 1.9e-5 to 1.3e-5 (no ulp allowance). The rest is gradient round-off (~1e-7 of a tensor's
# largest gradient: the frameworks sum in different orders), which Adam's per-element
# normalisation makes relative to each element's own, smaller gradient. Bound: the bias
# correction + 2e-5. Measured with the 4 ulps: 1.5e-5 (s16_i1k), 1.2e-5 (b16).
ROUND_ULPS = 4
PARAM_REL = adam_bias_correction_rel(STEPS) + 2e-5
