"""The steps that `vit_jax.benchmark` times: one `Runner` per framework.

`JaxRunner` jits `vit_jax.training.steps.make_train_step` (forward, backward, clip, AdamW) with the
state donated, and the inference forward. The PyTorch twin's runner, which does the same
work eagerly or under `torch.compile`, is `vit_torch.benchmark.TorchRunner`: vit_jax never
imports torch, and `python -m benchmarks.speed` runs both in one process.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from configs import default as default_config
from vit_core.spec import ViTSpec

MODES = ("infer", "train")  # infer is prepared first: GPU peak memory then reads per mode


@dataclasses.dataclass
class Options:
    """What to benchmark (the CLI flags; see `--help`)."""

    variant: str = "Ti/16"
    image_size: int = 224
    batch_size: int = 16
    dtype: str = "float32"
    mode: str = "both"
    attention: str = "default"
    remat: bool = False
    remat_policy: str = "default"
    scan: bool = False
    steps: int = 5
    warmup: int = 2
    repeats: int = 3
    frameworks: tuple[str, ...] = ("jax",)
    torch_compile: bool = False
    peak_tflops: float | None = None
    num_classes: int = 1000

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.mode == "both" else (self.mode,)

    @property
    def spec(self) -> ViTSpec:
        """The benchmarked architecture (what the FLOP count reads)."""
        return ViTSpec.from_variant(self.variant, image_size=self.image_size,
                                    num_classes=self.num_classes)



class Runner(abc.ABC):
    """One framework: `prepare(mode)` builds and warms a step, `run(mode, n)` times it."""

    @abc.abstractmethod
    def prepare(self, mode: str, warmup: int) -> dict[str, Any]:
        """Builds, compiles and warms up the step of `mode`; returns its set-up figures."""

    def run(self, mode: str, steps: int) -> tuple[float, float]:
        """Runs `steps` steps, blocking on each.

        Returns:
          Mean wall seconds and mean process CPU seconds (all threads) per step. The CPU
          seconds barely move when other jobs share the cores, the wall time does.
        """
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step(mode)
        return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps

    @abc.abstractmethod
    def step(self, mode: str) -> None:
        """Runs one step of `mode` and blocks until it is done."""

    def traces(self, mode: str) -> int | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {}

    @abc.abstractmethod
    def matmul_peak(self, dtype: str) -> dict[str, float]:
        """The dense matmul rate of this runner's framework and device (MFU denominator)."""


class JaxRunner(Runner):
    """`vit_jax.training.steps.make_train_step` and the inference forward, each jitted once."""

    def __init__(self, opts: Options) -> None:
        import jax
        import jax.numpy as jnp

        from vit_jax.model import vit
        from vit_jax.training import optim, steps
        from vit_jax.training.state import TrainState

        config = default_config.get_config()
        m = config.model
        m.variant, m.dtype, m.remat, m.scan = opts.variant, opts.dtype, opts.remat, opts.scan
        m.remat_policy = opts.remat_policy
        m.attention_impl = None if opts.attention == "default" else opts.attention
        config.image_size, config.batch_size = opts.image_size, opts.batch_size
        config.optimizer, config.weight_decay, config.grad_clip_norm = "adamw", 1e-4, 1.0
        model = vit.model_from_config(config.model, opts.num_classes, config.image_size)
        tx, schedule = optim.create_optimizer(config, total_steps=1_000_000)
        self.state = jax.jit(lambda: TrainState.create(model, tx, config))()
        key_img, key_lab = jax.random.split(jax.random.key(0))
        shape = (opts.batch_size, opts.image_size, opts.image_size, 3)  # NHWC
        self.batch = {"image": jax.random.uniform(key_img, shape, jnp.float32, -1.0, 1.0),
                      "label": jax.random.randint(key_lab, (opts.batch_size,), 0,
                                                  opts.num_classes)}
        self._traces = {"train": 0, "infer": 0}
        train_step = steps.make_train_step(model, tx, schedule, config)

        def counted_train_step(state, batch):
            self._traces["train"] += 1  # runs only while tracing
            return train_step(state, batch)

        def infer_step(params, images):
            self._traces["infer"] += 1
            return model.apply({"params": params}, images, train=False)

        self._fns = {"train": jax.jit(counted_train_step, donate_argnums=0),
                     "infer": jax.jit(infer_step)}
        self._jax = jax

    def _args(self, mode: str) -> tuple[Any, ...]:
        if mode == "train":
            return self.state, self.batch
        return self.state.params, self.batch["image"]

    def step(self, mode: str) -> None:
        out = self._fns[mode](*self._args(mode))
        if mode == "train":
            self.state = out[0]
        self._jax.block_until_ready(out)

    def prepare(self, mode: str, warmup: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        lowered = self._fns[mode].lower(*self._args(mode))
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        self.step(mode)  # hits the caches filled by lower/compile
        t3 = time.perf_counter()
        traces_after_first = self._traces[mode]
        for _ in range(warmup):
            self.step(mode)
        info: dict[str, Any] = {"trace_lower_s": t1 - t0, "compile_s": t2 - t1,
                                "first_step_s": t3 - t2,
                                "traces_after_first_step": traces_after_first}
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        if cost and "flops" in cost:
            info["xla_cost_analysis_flops"] = float(cost["flops"])
        mem = compiled.memory_analysis()
        if mem is not None:
            info["xla_memory_estimate_bytes"] = int(
                mem.argument_size_in_bytes + mem.output_size_in_bytes
                + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
        stats = self._jax.local_devices()[0].memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            # JAX cannot reset the peak: this is the process's peak so far.
            info["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
        return info

    def traces(self, mode: str) -> int:
        return self._traces[mode]

    def describe(self) -> dict[str, Any]:
        dev = self._jax.local_devices()[0]
        return {"version": self._jax.__version__, "backend": self._jax.default_backend(),
                "device": dev.device_kind, "donate_state": True}

    def matmul_peak(self, dtype: str) -> dict[str, float]:
        from vit_jax.model import flops

        return flops.matmul_peak_flops(dtype)


# Name → runner factory. vit_jax imports no torch: `python -m benchmarks.speed` adds the
# PyTorch twin's runners (vit_torch.benchmark) to these.
RUNNERS: dict[str, Callable[[Options], Runner]] = {"jax": JaxRunner}
