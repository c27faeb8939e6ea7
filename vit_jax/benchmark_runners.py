"""The steps that `vit_jax.benchmark` times: one `Runner` per framework.

`JaxRunner` jits `vit_jax.train.make_train_step` (forward, backward, clip, AdamW) with the
state donated, and the inference forward; `TorchRunner` does the same work eagerly on
`vit_torch` (or under `torch.compile`). Each framework is imported only when its runner is
built, so either side can be benchmarked without the other installed.
"""

from __future__ import annotations

import abc
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vit_jax.benchmark import Options


def _load_default_config() -> Any:
    """`configs/default.py`'s ConfigDict (by path: `configs` need not be importable)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "configs", "default.py")
    spec = importlib.util.spec_from_file_location("_vit_default_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


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


class JaxRunner(Runner):
    """`vit_jax.train.make_train_step` and the inference forward, each jitted once."""

    def __init__(self, opts: Options) -> None:
        import jax
        import jax.numpy as jnp

        from vit_jax import train
        from vit_jax.state import TrainState

        config = _load_default_config()
        m = config.model
        m.variant, m.dtype, m.remat, m.scan = opts.variant, opts.dtype, opts.remat, opts.scan
        m.attention_impl = None if opts.attention == "default" else opts.attention
        config.image_size, config.batch_size = opts.image_size, opts.batch_size
        config.optimizer, config.weight_decay, config.grad_clip_norm = "adamw", 1e-4, 1.0
        model = train.create_model(config, opts.num_classes)
        tx, schedule = train.create_optimizer(config, total_steps=1_000_000)
        self.state = jax.jit(lambda: TrainState.create(model, tx, config))()
        key_img, key_lab = jax.random.split(jax.random.key(0))
        shape = (opts.batch_size, opts.image_size, opts.image_size, 3)  # NHWC
        self.batch = {"image": jax.random.uniform(key_img, shape, jnp.float32, -1.0, 1.0),
                      "label": jax.random.randint(key_lab, (opts.batch_size,), 0,
                                                  opts.num_classes)}
        self._traces = {"train": 0, "infer": 0}
        train_step = train.make_train_step(model, tx, schedule, config)

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


class TorchRunner(Runner):
    """The same steps in eager PyTorch (or with `torch.compile(model)`)."""

    def __init__(self, opts: Options, compile_model: bool = False) -> None:
        import torch
        import torch.nn.functional as F

        from vit_torch.model import create_model

        self._torch = torch
        self.cuda = torch.cuda.is_available()
        dev = "cuda" if self.cuda else "cpu"
        torch.manual_seed(0)
        self.model = create_model(
            opts.variant, num_classes=opts.num_classes, img_size=opts.image_size).to(dev)
        # Weight decay on matrices only, like the JAX mask on `.../kernel`.
        decay = [p for n, p in self.model.named_parameters() if n.endswith("weight")
                 and p.ndim >= 2]
        rest = [p for n, p in self.model.named_parameters() if not (n.endswith("weight")
                                                                   and p.ndim >= 2)]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4},
                                      {"params": rest, "weight_decay": 0.0}], lr=1e-3)
        self.forward = torch.compile(self.model) if compile_model else self.model
        self.compiled = compile_model
        gen = torch.Generator().manual_seed(0)
        shape = (opts.batch_size, 3, opts.image_size, opts.image_size)  # NCHW
        self.images = (torch.rand(shape, generator=gen) * 2 - 1).to(dev)
        self.labels = torch.randint(0, opts.num_classes, (opts.batch_size,), generator=gen).to(dev)
        bf16 = opts.dtype == "bfloat16"
        self.autocast = lambda: torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16)
        self._ce = F.cross_entropy

    def step(self, mode: str) -> None:
        torch = self._torch
        if mode == "train":
            self.model.train()
            with self.autocast():
                logits = self.forward(self.images)
            loss = self._ce(logits.float(), self.labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        else:
            self.model.eval()
            with torch.inference_mode(), self.autocast():
                self.forward(self.images)
        if self.cuda:
            torch.cuda.synchronize()

    def prepare(self, mode: str, warmup: int) -> dict[str, Any]:
        if self.cuda:
            self._torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        self.step(mode)  # torch.compile compiles here
        info: dict[str, Any] = {"first_step_s": time.perf_counter() - t0}
        for _ in range(warmup):
            self.step(mode)
        if self.compiled:
            info["compile_s"] = info["first_step_s"]
        if self.cuda:
            info["device_peak_bytes"] = int(self._torch.cuda.max_memory_allocated())
        return info

    def describe(self) -> dict[str, Any]:
        torch = self._torch
        return {"version": torch.__version__, "threads": torch.get_num_threads(),
                "device": torch.cuda.get_device_name() if self.cuda else "cpu",
                "compile": self.compiled, "bf16": "torch.autocast, float32 parameters",
                "sdpa": "F.scaled_dot_product_attention, default backend choice",
                "optimizer": "torch.optim.AdamW (default implementation)"}


RUNNERS = {"jax": JaxRunner, "torch": TorchRunner,
           "torch-compile": lambda opts: TorchRunner(opts, compile_model=True)}
