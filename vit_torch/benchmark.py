"""The PyTorch twin's side of the benchmarks: its timed steps, its matmul rate, its memory.

`TorchRunner` does the work `vit_jax.benchmark`'s JAX runner does (forward, backward,
`clip_grad_norm_`, `torch.optim.AdamW`; inference under `torch.inference_mode`), eagerly
or under `torch.compile`; `saved_tensors` counts what autograd keeps for the backward
pass, on the meta device (shapes only: nothing is computed or allocated). Both are driven
by `python -m benchmarks.speed` and `python -m benchmarks.memory`, which put the two
frameworks side by side; this module imports no JAX.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F

from vit_torch.model import create_model


class TorchRunner:
    """Eager (or `torch.compile`d) train and inference steps of the twin.

    The interface of `vit_jax.tools.benchmark_runners.Runner`: `prepare(mode, warmup)`,
    `run(mode, steps)`, `step(mode)`, `traces(mode)`, `describe()` and `matmul_peak(dtype)`.

    Args:
      variant, image_size, batch_size, num_classes: the model and batch.
      dtype: "float32" or "bfloat16" (`torch.autocast`, float32 parameters).
      compile_model: wrap the model in `torch.compile`.
    """

    def __init__(self, variant: str, image_size: int, batch_size: int, num_classes: int,
                 dtype: str, compile_model: bool = False) -> None:
        self.cuda = torch.cuda.is_available()
        dev = "cuda" if self.cuda else "cpu"
        torch.manual_seed(0)
        self.model = create_model(variant, num_classes=num_classes, img_size=image_size).to(dev)
        # Weight decay on matrices only, like the JAX mask on `.../kernel`.
        named = list(self.model.named_parameters())
        decay = [p for n, p in named if n.endswith("weight") and p.ndim >= 2]
        rest = [p for n, p in named if not (n.endswith("weight") and p.ndim >= 2)]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4},
                                      {"params": rest, "weight_decay": 0.0}], lr=1e-3)
        self.forward = torch.compile(self.model) if compile_model else self.model
        self.compiled = compile_model
        gen = torch.Generator().manual_seed(0)
        shape = (batch_size, 3, image_size, image_size)  # NCHW
        self.images = (torch.rand(shape, generator=gen) * 2 - 1).to(dev)
        self.labels = torch.randint(0, num_classes, (batch_size,), generator=gen).to(dev)
        bf16 = dtype == "bfloat16"
        self.autocast = lambda: torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16)

    def step(self, mode: str) -> None:
        """Runs one step of `mode` ("train" or "infer") and waits for it."""
        if mode == "train":
            self.model.train()
            with self.autocast():
                logits = self.forward(self.images)
            loss = F.cross_entropy(logits.float(), self.labels)
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

    def run(self, mode: str, steps: int) -> tuple[float, float]:
        """Mean wall seconds and process CPU seconds per step over `steps` steps."""
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step(mode)
        return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps

    def prepare(self, mode: str, warmup: int) -> dict[str, Any]:
        """First step (torch.compile compiles here) and `warmup` more; returns timings."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        self.step(mode)
        info: dict[str, Any] = {"first_step_s": time.perf_counter() - t0}
        for _ in range(warmup):
            self.step(mode)
        if self.compiled:
            info["compile_s"] = info["first_step_s"]
        if self.cuda:
            info["device_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        return info

    def traces(self, mode: str) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        """Versions and settings for the result file."""
        return {"version": torch.__version__, "threads": torch.get_num_threads(),
                "device": torch.cuda.get_device_name() if self.cuda else "cpu",
                "compile": self.compiled, "bf16": "torch.autocast, float32 parameters",
                "sdpa": "F.scaled_dot_product_attention, default backend choice",
                "optimizer": "torch.optim.AdamW (default implementation)"}

    def matmul_peak(self, dtype: str) -> dict[str, float]:
        """`matmul_peak_flops` on the device this runner uses."""
        return matmul_peak_flops(dtype)


def matmul_peak_flops(dtype: str, *, size: int | None = None,
                      min_time: float = 1.0) -> dict[str, float]:
    """The dense matmul rate of torch's device (CUDA if available), best of the runs.

    Args:
      dtype: "float32" or "bfloat16".
      size: matrix side; default 8192 on GPU, 1536 on CPU.
      min_time: seconds of timed products.

    Returns:
      {"tflops": rate, "size": side, "seconds": time of one product}.
    """
    gpu = torch.cuda.is_available()
    dev = "cuda" if gpu else "cpu"
    size = size or (8192 if gpu else 1536)
    a = torch.randn(size, size, device=dev, dtype=getattr(torch, dtype))  # (S, S)
    b = torch.randn(size, size, device=dev, dtype=getattr(torch, dtype))  # (S, S)

    def product() -> None:
        torch.matmul(a, b)
        if gpu:
            torch.cuda.synchronize()

    for _ in range(3):
        product()
    best, total, calls = float("inf"), 0.0, 0
    while total < min_time or calls < 5:
        t0 = time.perf_counter()
        product()
        dt = time.perf_counter() - t0
        best, total, calls = min(best, dt), total + dt, calls + 1
    return {"tflops": 2 * size**3 / best / 1e12, "size": size, "seconds": best}


def saved_tensors(variant: str, batch_size: int, image_size: int = 224, *,
                  dtype: str = "float32", num_classes: int = 1000,
                  top: int = 8) -> dict[str, Any]:
    """What autograd saves for the backward pass of the twin, counted on the meta device.

    A `torch.autograd.graph.saved_tensors_hooks` pack hook sees every saved tensor of the
    training forward; each storage counts once (a view of a saved tensor adds nothing),
    and the module being run (by forward pre-hooks on the blocks) names its block. On the
    meta device `F.scaled_dot_product_attention` takes its math path (the softmax weights
    are saved, as on CPU); a GPU flash kernel saves less. The meta device has no autocast:
    "bfloat16" casts the whole model to bfloat16 (autocast would also keep LayerNorm
    outputs and bf16 copies of the weights in float32 / bfloat16 beside them).

    Args:
      variant, batch_size, image_size, num_classes: the model and batch.
      dtype: "float32" or "bfloat16".
      top: how many of the largest saved tensors to name.

    Returns:
      {"total": bytes, "blocks": bytes saved inside the blocks, "per_block", "count",
      "largest": [{"shape", "dtype", "bytes", "count", "where"}]}, the largest grouped by
      shape, dtype and the module that saved them.
    """
    tdtype = getattr(torch, dtype)
    with torch.device("meta"):
        model = create_model(variant, num_classes=num_classes, img_size=image_size).to(tdtype)
    model.train()
    images = torch.empty(batch_size, 3, image_size, image_size, device="meta", dtype=tdtype)
    stack = ["model"]  # the modules being run, innermost last
    names = {mod: name for name, mod in model.named_modules()}

    def enter(mod: torch.nn.Module, _args: Any) -> None:
        stack.append(names[mod] or "model")

    def leave(mod: torch.nn.Module, _args: Any, _out: Any) -> None:
        stack.pop()

    hooks = [h for m in model.modules()
             for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    seen: dict[int, tuple[int, str, tuple[int, ...], str]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        # Parameters are the model's memory, not the step's: autograd keeps references.
        if not isinstance(t, torch.nn.Parameter):
            seen.setdefault(storage._cdata, (storage.nbytes(), str(t.dtype).removeprefix(
                "torch."), tuple(t.shape), stack[-1]))
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(images)
    finally:
        for h in hooks:
            h.remove()
    rows = list(seen.values())
    total = sum(r[0] for r in rows)
    blocks = sum(r[0] for r in rows if r[3].startswith("blocks."))
    groups: Counter = Counter()
    sizes: dict[tuple, int] = {}
    for nbytes, dt, shape, where in rows:
        key = (shape, dt, ".".join(p for p in where.split(".") if not p.isdigit()))
        groups[key] += 1
        sizes[key] = nbytes
    largest = sorted(groups, key=lambda k: -sizes[k] * groups[k])[:top]
    return {"total": total, "blocks": blocks, "per_block": blocks // len(model.blocks),
            "count": len(rows),
            "largest": [{"shape": list(k[0]), "dtype": k[1], "bytes": sizes[k],
                         "count": groups[k], "where": k[2]} for k in largest]}
