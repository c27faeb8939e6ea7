"""Prints one markdown table from several `python -m benchmarks.speed --json` files.

    python benchmarks/summarize.py out/*.json
"""

from __future__ import annotations

import json
import sys


def rows(path: str) -> list[list[str]]:
    """Table rows (one per framework and mode) of one benchmark JSON file.

    Args:
      path: a file written by `python -m benchmarks.speed --json` (or vit_jax.benchmark).

    Returns:
      Rows of cell strings, in the column order of `HEADER`.
    """
    with open(path) as f:
        r = json.load(f)
    o = r["options"]
    out = []
    for fw, modes in r["results"].items():
        device = r["environment"].get(fw.split("-")[0], {}).get("device", "?")
        for mode, m in modes.items():
            ips = m["images_per_s"]
            mem = m.get("device_peak_bytes") or m.get("xla_memory_estimate_bytes")
            attn = o["attention"] if fw == "jax" else "sdpa"
            out.append([
                o["variant"], str(o["batch_size"]), o["dtype"], fw, attn, mode,
                f"{ips['median']:.1f}", f"{ips['min']:.1f}–{ips['max']:.1f}",
                f"{m['step_s']['median'] * 1e3:.1f}", f"{m.get('compile_s', 0.0):.1f}",
                f"{m['tflops']:.3g}", f"{m['mfu']:.1%}",
                f"{mem / 2**30:.1f}" if mem else "-", device,
            ])
    return out


HEADER = ["variant", "batch", "dtype", "framework", "attention", "mode", "img/s", "min–max",
          "step ms", "compile s", "TFLOP/s", "MFU", "mem GiB", "device"]


def main(paths: list[str]) -> None:
    """Prints the combined table and each file's JAX/other ratios."""
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for path in paths:
        for row in rows(path):
            print("| " + " | ".join(row) + " |")
    print()
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        for key, by_mode in r["ratios"].items():
            o = r["options"]
            print(f"{o['variant']} {o['dtype']} attention={o['attention']} {key}: "
                  + ", ".join(f"{m} {v:.2f}x" for m, v in by_mode.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
