"""Speed of the real jitted train / inference steps (and, with benchmarks/, the PyTorch twin's).

    python -m vit_jax.benchmark --variant Ti/16 --batch-size 16 --mode both --json out.json
    python -m benchmarks.speed --variant Ti/16 --frameworks jax,torch --torch-compile

JAX runs `vit_jax.steps.make_train_step` (forward, backward, global-norm clip, AdamW via
`create_optimizer`) jitted with the state donated, and the jitted inference forward.
`python -m benchmarks.speed` is this command with the PyTorch twin's runners added
(`vit_torch.benchmark`: the same work eagerly on `vit_torch`, forward, backward,
`clip_grad_norm_`, `torch.optim.AdamW`; inference under `torch.inference_mode`), same
variant, batch, image size and dtype; vit_jax itself never imports torch. bfloat16 means
bf16 compute with float32 parameters on both sides (the Flax `dtype=` and `torch.autocast`).
Frameworks are interleaved across repeats (the order rotates) so that machine noise hits
all of them; every step blocks on its result.
FLOP/s are analytic (`vit_jax.flops`), MFU is against --peak-tflops or a matmul measured
in the same run on the same device. Process CPU seconds per step are reported too: on a
shared CPU box they are the figure that noise barely moves. The command line first calls
`vit_jax.host_memory.retain_freed_memory` (as `vit_jax.train` does; it applies to both
frameworks, which share the process).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
from collections.abc import Callable, Mapping
from typing import Any

from vit_core.errors import ConfigError, UserError
from vit_jax import flops, models
from vit_jax.benchmark_runners import RUNNERS, Options, Runner
from vit_jax.host_memory import retain_freed_memory

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
    if opts.remat_policy not in models.REMAT_POLICIES:
        raise ConfigError(f"--remat-policy: unknown {opts.remat_policy!r}; known: "
                          f"{list(models.REMAT_POLICIES)}.")
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
            step_flops = flops.step_flops(opts.variant, opts.image_size, opts.batch_size, mode,
                                          num_classes=opts.num_classes)
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
            "forward_macs_per_image": flops.forward_macs(
                opts.variant, opts.image_size, num_classes=opts.num_classes),
            "per_step": {m: flops.step_flops(opts.variant, opts.image_size, opts.batch_size, m,
                                             num_classes=opts.num_classes) for m in opts.modes},
            "convention": "train = 6 x forward MACs, infer = 2 x forward MACs (matmuls only)",
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


def parse_args(argv: list[str] | None = None, prog: str = "python -m vit_jax.benchmark",
               default_frameworks: str = "jax") -> tuple[Options, str | None]:
    """Parses the command line into `Options` and the --json path."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--variant", default="Ti/16", help="ViT variant (vit_jax/variants.py).")
    p.add_argument("--image-size", type=int, default=224, help="Square image side in pixels.")
    p.add_argument("--batch-size", type=int, default=16, help="Images per step.")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="Compute dtype; parameters stay float32 (torch: autocast).")
    p.add_argument("--mode", choices=("train", "infer", "both"), default="both",
                   help="Train step (fwd+bwd+AdamW), inference forward, or both.")
    p.add_argument("--attention", choices=("default", "xla", "cudnn"), default="default",
                   help="JAX attention (vit_jax/attention.py): default = vit_jax's softmax "
                        "attention with a hand-written backward; xla / cudnn = "
                        "jax.nn.dot_product_attention (cudnn: GPU flash kernel). PyTorch "
                        "always uses its default SDPA.")
    p.add_argument("--remat", action="store_true", help="JAX: recompute block activations.")
    p.add_argument("--remat-policy", default="default",
                   help=f"JAX: what a block saves, one of {', '.join(models.REMAT_POLICIES)} "
                        "(config.model.remat_policy).")
    p.add_argument("--scan", action="store_true", help="JAX: nn.scan over the blocks.")
    p.add_argument("--steps", type=int, default=5, help="Timed steps per repeat.")
    p.add_argument("--warmup", type=int, default=2, help="Untimed steps after compiling.")
    p.add_argument("--repeats", type=int, default=3,
                   help="Interleaved repeats; the median and spread are over these.")
    p.add_argument("--frameworks", default=default_frameworks,
                   help="Comma list of: jax; with python -m benchmarks.speed also torch (eager "
                        "PyTorch).")
    p.add_argument("--torch-compile", action="store_true",
                   help="benchmarks.speed: also time PyTorch with torch.compile(model) "
                        "(framework torch-compile).")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="Device peak for MFU; default: a large matmul measured in this run.")
    p.add_argument("--num-classes", type=int, default=1000, help="Width of the head.")
    p.add_argument("--json", default=None, metavar="OUT", help="Write the result here.")
    a = p.parse_args(argv)
    frameworks = tuple(f.strip() for f in a.frameworks.split(",") if f.strip())
    opts = Options(
        variant=a.variant, image_size=a.image_size, batch_size=a.batch_size, dtype=a.dtype,
        mode=a.mode, attention=a.attention, remat=a.remat, remat_policy=a.remat_policy,
        scan=a.scan, steps=a.steps,
        warmup=a.warmup, repeats=a.repeats, frameworks=frameworks,
        torch_compile=a.torch_compile, peak_tflops=a.peak_tflops, num_classes=a.num_classes)
    return opts, a.json


def main(argv: list[str] | None = None, factories: Mapping[str, RunnerFactory] = RUNNERS,
         prog: str = "python -m vit_jax.benchmark", default_frameworks: str = "jax",
         ) -> dict[str, Any]:
    """CLI entry point: runs, prints the table, writes --json.

    Args:
      argv: the command line (default: sys.argv).
      factories, prog, default_frameworks: what `python -m benchmarks.speed` changes to add
        the PyTorch twin.

    Returns:
      The result of `run_benchmark`.
    """
    host_memory_retained = retain_freed_memory()  # before JAX's CPU client exists
    # Two frameworks share one GPU: JAX must not grab 75% of its memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    opts, out = parse_args(argv, prog, default_frameworks)
    try:
        result = run_benchmark(opts, factories)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    result["environment"]["host_memory_retained"] = host_memory_retained
    print_table(result)
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
