"""Speed of the real jitted train / inference steps (the library of vit_jax.benchmark).

JAX runs `vit_jax.training.steps.make_train_step` (forward, backward, global-norm clip, AdamW via
`create_optimizer`) jitted with the state donated, and the jitted inference forward.
`python -m benchmarks.speed` is this command with the PyTorch twin's runners added
(`vit_torch.benchmark`: the same work eagerly on `vit_torch`, forward, backward,
`clip_grad_norm_`, `torch.optim.AdamW`; inference under `torch.inference_mode`), same
variant, batch, image size and dtype; vit_jax itself never imports torch. bfloat16 means
bf16 compute with float32 parameters on both sides (the Flax `dtype=` and `torch.autocast`).
Frameworks are interleaved across repeats (the order rotates) so that machine noise hits
all of them; every step blocks on its result.
FLOP/s are analytic (`vit_jax.model.flops`), MFU is against --peak-tflops or a matmul
measured in the same run on the same device. Process CPU seconds per step are reported
too: on a shared CPU box they are the figure that noise barely moves.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
from collections.abc import Callable, Mapping
from typing import Any

from vit_core.errors import ConfigError
from vit_jax.model import flops, vit
from vit_jax.tools.benchmark_runners import RUNNERS, Options, Runner

RunnerFactory = Callable[[Options], Runner]


def _spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and interquartile range of repeated measurements."""
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "q1": q[0], "q3": q[2]}


def _peak(opts: Options, runners: Mapping[str, Runner]) -> dict[str, Any]:
    """The MFU denominator: given, or the best matmul rate measured by the frameworks run."""
    if opts.peak_tflops:
        return {"tflops": opts.peak_tflops, "source": "--peak-tflops"}
    first = {}  # one runner per framework ("torch" and "torch-compile" share a matmul)
    for name, runner in runners.items():
        first.setdefault(name.split("-")[0], runner)
    measured = {fw: first[fw].matmul_peak(opts.dtype) for fw in sorted(first)}
    best = max(measured, key=lambda fw: measured[fw]["tflops"])
    return {"tflops": measured[best]["tflops"], "source": f"measured matmul ({best})",
            "measured": measured}


def run_benchmark(opts: Options, factories: Mapping[str, RunnerFactory] = RUNNERS
                  ) -> dict[str, Any]:
    """Prepares every framework and mode, times them interleaved, and summarises.

    Args:
      opts: the benchmark options.
      factories: framework name → runner factory (`RUNNERS`: JAX only; benchmarks/speed.py
        adds the PyTorch twin's).

    Returns:
      The JSON-ready result: "options", "environment", "peak", "flops" and
      "results[framework][mode]" with images/s, step time, compile time, memory, TFLOP/s,
      MFU and trace counts, plus "ratios" (JAX over each other framework).
    """
    names = list(opts.frameworks) + (["torch-compile"] if opts.torch_compile else [])
    for name in names:
        if name not in factories:
            hint = (" (PyTorch runs from `python -m benchmarks.speed`)"
                    if name.startswith("torch") else "")
            raise ConfigError(f"Unknown framework {name!r}; known: {sorted(factories)}{hint}.")
    if opts.remat_policy not in vit.REMAT_POLICIES:
        raise ConfigError(f"--remat-policy: unknown {opts.remat_policy!r}; known: "
                          f"{list(vit.REMAT_POLICIES)}.")
    runners: dict[str, Runner] = {name: factories[name](opts) for name in names}
    prepared: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
    for mode in opts.modes:
        for name, runner in runners.items():
            prepared[name][mode] = runner.prepare(mode, warmup=opts.warmup)
            print(f"prepared {name:13s} {mode:5s}: {_fmt(prepared[name][mode])}", flush=True)
    times: dict[str, dict[str, list[float]]] = {n: {m: [] for m in opts.modes} for n in names}
    cpu: dict[str, dict[str, list[float]]] = {n: {m: [] for m in opts.modes} for n in names}
    for rep in range(opts.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            for mode in opts.modes:
                wall_s, cpu_s = runners[name].run(mode, opts.steps)
                times[name][mode].append(wall_s)
                cpu[name][mode].append(cpu_s)
    peak = _peak(opts, runners)
    results: dict[str, Any] = {}
    for name in names:
        results[name] = {}
        for mode in opts.modes:
            step_s = _spread(times[name][mode])
            step_flops = flops.step_flops(opts.spec, opts.batch_size, mode)
            tflops = step_flops / step_s["median"] / 1e12
            traces = runners[name].traces(mode)
            results[name][mode] = {
                **prepared[name][mode],
                "step_s": step_s,
                "process_cpu_s_per_step": _spread(cpu[name][mode]),
                "images_per_s": {"median": opts.batch_size / step_s["median"],
                                 "min": opts.batch_size / step_s["max"],
                                 "max": opts.batch_size / step_s["min"]},
                "tflops": tflops,
                "mfu": tflops / peak["tflops"],
                "traces_total": traces,
            }
            if traces is not None:
                results[name][mode]["retraces_after_first_step"] = (
                    traces - prepared[name][mode]["traces_after_first_step"])
    ratios = {
        f"jax/{other}": {m: results["jax"][m]["images_per_s"]["median"]
                         / results[other][m]["images_per_s"]["median"] for m in opts.modes}
        for other in names if other != "jax" and "jax" in results
    }
    return {
        "options": dataclasses.asdict(opts),
        "environment": _environment(runners),
        "peak": peak,
        "flops": {
            "forward_macs_per_image": flops.forward_macs(opts.spec),
            "per_step": {m: flops.step_flops(opts.spec, opts.batch_size, m) for m in opts.modes},
            "convention": "train = 6 x forward MACs, infer = 2 x forward MACs (matmuls and "
                          "convolutions only)",
        },
        "results": results,
        "ratios": ratios,
        "process_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "process_max_rss_note": "whole process (all frameworks and modes), Linux ru_maxrss",
    }


def _environment(runners: dict[str, Runner]) -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpu_count": os.cpu_count(), "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
                           "load_average_1_5_15min": os.getloadavg()}
    for name, runner in runners.items():
        env[name] = runner.describe()
    return env


def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items()
                     if not isinstance(v, dict))


def print_table(result: dict[str, Any]) -> None:
    """Prints one line per framework and mode, and the JAX/other ratios."""
    o = result["options"]
    print(f"\n{o['variant']} {o['image_size']}px batch {o['batch_size']} {o['dtype']}, "
          f"attention={o['attention']} remat={o['remat']} "
          f"remat_policy={o.get('remat_policy', 'default')} scan={o['scan']}; peak "
          f"{result['peak']['tflops']:.3g} TFLOP/s ({result['peak']['source']})")
    print(f"{'framework':14s}{'mode':6s}{'img/s med':>10s}{'[min, max]':>18s}{'step ms':>9s}"
          f"{'cpu s':>7s}{'compile s':>10s}{'TFLOP/s':>9s}{'MFU':>7s}{'traces':>7s}")
    for name, modes in result["results"].items():
        for mode, r in modes.items():
            ips = r["images_per_s"]
            spread = f"[{ips['min']:.1f}, {ips['max']:.1f}]"
            traces = "-" if r["traces_total"] is None else str(r["traces_total"])
            print(f"{name:14s}{mode:6s}{ips['median']:10.1f}{spread:>18s}"
                  f"{r['step_s']['median'] * 1e3:9.1f}"
                  f"{r['process_cpu_s_per_step']['median']:7.2f}{r.get('compile_s', 0.0):10.2f}"
                  f"{r['tflops']:9.4g}{r['mfu']:7.1%}{traces:>7s}")
    for key, by_mode in result["ratios"].items():
        print(f"{key}: " + ", ".join(f"{m} {v:.2f}x" for m, v in by_mode.items()))
