"""Scratch A/B of attention implementations for XLA:CPU (the CPU performance study).

Each variant replaces `vit_jax.model.vit.MultiHeadAttention.__call__` while a step is traced,
keeping the parameter tree (query/key/value/out, checkpoint layout) unchanged, so every
variant runs on the same params and is checked against the unpatched model. Steps are the
real `vit_jax.tools.benchmark_runners.JaxRunner` steps; all variants and eager PyTorch are timed
interleaved in one process, so machine noise hits them alike.

    python benchmarks/cpu_variants.py --variant Ti/16 --variants base,xla_dpa --rounds 8
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/cpu_variants.py
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])
from vit_jax.model import attention, vit
from vit_jax.tools.benchmark_runners import JaxRunner, Options
from vit_torch.benchmark import TorchRunner

_ORIGINAL = vit.MultiHeadAttention


class _DenseParams(nn.Module):
    """The params of an `nn.DenseGeneral` (same names and shapes), without its matmul."""

    kernel_shape: tuple[int, ...]
    bias_shape: tuple[int, ...]

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), self.kernel_shape)
        return kernel, self.param("bias", nn.initializers.zeros, self.bias_shape)


def _separate_projections(mod: Any, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q, k, v as the model computes them: three DenseGeneral (B, N, K, Dh) matmuls."""
    d = x.shape[-1]
    proj = functools.partial(nn.DenseGeneral, features=(mod.num_heads, d // mod.num_heads),
                             dtype=mod.dtype)
    return proj(name="query")(x), proj(name="key")(x), proj(name="value")(x)


def _fused_projections(mod: Any, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q, k, v from ONE (B·N, D) × (D, 3D) matmul over the concatenated kernels."""
    b, n, d = x.shape
    k_, dh = mod.num_heads, d // mod.num_heads
    parts = [_DenseParams((d, k_, dh), (k_, dh), name=nm)() for nm in ("query", "key", "value")]
    w = jnp.concatenate([p[0].reshape(d, d) for p in parts], axis=1).astype(mod.dtype)  # (D, 3D)
    bias = jnp.concatenate([p[1].reshape(d) for p in parts]).astype(mod.dtype)  # (3D,)
    qkv = (x.astype(mod.dtype) @ w + bias).reshape(b, n, 3, k_, dh)  # (B, N, 3, K, Dh)
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]


def _dpa(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """`jax.nn.dot_product_attention` (XLA implementation): the model's attention until
    2026-11-26, autodiff backward."""
    return jax.nn.dot_product_attention(q, k, v, implementation="xla")


def _head_major(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q·kᵀ/√Dh)·v with heads moved before tokens, autodiff backward."""
    scale = q.shape[-1] ** -0.5
    qh, kh, vh = (t.transpose(0, 2, 1, 3) for t in (q * scale, k, v))  # (B, K, N, Dh)
    logits = jnp.einsum("bkqh,bkvh->bkqv", qh, kh)  # (B, K, N, N)
    w = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.einsum("bkqv,bkvh->bkqh", w, vh).transpose(0, 2, 1, 3)  # (B, N, K, Dh)


def _variant(project: Callable[..., Any], attend: Callable[..., jax.Array]) -> type:
    class Attention(_ORIGINAL):
        @nn.compact
        def __call__(self, x: jax.Array, *, deterministic: bool,
                     return_weights: bool = False) -> tuple[jax.Array, None]:
            q, k, v = project(self, x)
            y = attend(q, k, v)  # (B, N, K, Dh)
            out = nn.DenseGeneral(features=x.shape[-1], axis=(-2, -1), dtype=self.dtype,
                                  name="out")
            return out(y), None

    return Attention


VARIANTS = {
    # base: the model as it is, i.e. vit_jax.model.attention.softmax_attention (head-major,
    # hand-written backward) since 2026-11-27.
    "base": _ORIGINAL,
    "xla_dpa": _variant(_separate_projections, _dpa),
    "head_major_autodiff": _variant(_separate_projections, _head_major),
    "fused_qkv": _variant(_fused_projections, attention.softmax_attention),
}


@contextlib.contextmanager
def patched(name: str) -> Iterator[None]:
    """Swaps the attention module class while a step is traced."""
    vit.MultiHeadAttention = VARIANTS[name]
    try:
        yield
    finally:
        vit.MultiHeadAttention = _ORIGINAL


def check_same_function(opts: Options, names: list[str]) -> None:
    """Asserts every variant computes the base model's logits on the same params."""
    model = vit.create_model(opts.variant, num_classes=opts.num_classes)
    x = jax.random.uniform(jax.random.key(1), (2, opts.image_size, opts.image_size, 3))
    params = model.init(jax.random.key(0), x)["params"]
    ref = model.apply({"params": params}, x)
    for name in names:
        with patched(name):
            got = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
        np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4, err_msg=name)


def shard_over_devices(runner: JaxRunner) -> None:
    """Data parallelism over the (fake) CPU devices: batch split, state replicated."""
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    mesh = jax.make_mesh((len(jax.devices()),), ("data",), axis_types=(AxisType.Auto,))
    runner.state = jax.device_put(runner.state, NamedSharding(mesh, PartitionSpec()))
    runner.batch = jax.device_put(runner.batch, NamedSharding(mesh, PartitionSpec("data")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="Ti/16")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--modes", default="infer,train")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--data-parallel", default="",
                   help="Variants to also run with the batch split over all CPU devices "
                        "(XLA_FLAGS=--xla_force_host_platform_device_count=2), as NAME@dp.")
    a = p.parse_args()
    opts = Options(variant=a.variant, batch_size=a.batch_size)
    names, modes = a.variants.split(","), a.modes.split(",")
    check_same_function(opts, names)
    runners: dict[str, Any] = {}
    dp = [f"{n}@dp" for n in a.data_parallel.split(",") if n] if len(jax.devices()) > 1 else []
    for label in names + dp:
        name = label.removesuffix("@dp")
        with patched(name):
            runners[label] = JaxRunner(opts)
            if label.endswith("@dp"):
                shard_over_devices(runners[label])
            for mode in modes:
                runners[label].prepare(mode, warmup=1)
    if not a.no_torch:
        runners["torch"] = TorchRunner(opts.variant, opts.image_size, opts.batch_size,
                                       opts.num_classes, opts.dtype)
        for mode in modes:
            runners["torch"].prepare(mode, warmup=1)
    times: dict[tuple[str, str], list[float]] = {(n, m): [] for n in runners for m in modes}
    cpu: dict[tuple[str, str], list[float]] = {(n, m): [] for n in runners for m in modes}
    for _ in range(a.rounds):
        for mode in modes:
            for name, runner in runners.items():
                t0, c0 = time.perf_counter(), time.process_time()
                runner.step(mode)
                times[name, mode].append(time.perf_counter() - t0)
                cpu[name, mode].append(time.process_time() - c0)
    for mode in modes:
        base = times["base", mode] if "base" in names else None
        for name in runners:
            t = times[name, mode]
            line = (f"{mode:5s} {name:25s} min {min(t) * 1e3:8.1f} ms  median "
                    f"{statistics.median(t) * 1e3:8.1f} ms  img/s {a.batch_size / min(t):6.1f}")
            c = cpu[name, mode]
            line += f"  cpu-s min {min(c):6.2f}"
            if base:  # paired: same round, adjacent in time
                ratio = statistics.median(b / x for b, x in zip(base, t, strict=True))
                line += (f"  speed-up vs base: paired median {ratio:.3f}x, "
                         f"min {min(base) / min(t):.3f}x")
            print(line, flush=True)


if __name__ == "__main__":
    main()
