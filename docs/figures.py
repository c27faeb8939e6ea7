"""Regenerates the README figures.

  python -m vit_jax.train --config configs/digits.py --workdir runs/digits   # ~2 min, CPU
  python docs/figures.py --workdir runs/digits --out docs/

Writes four PNGs into --out:
  patches.png       a digit cut into 4×4 patches and the resulting token sequence;
  architecture.png  the ViT drawn as boxes (no model or data needed);
  attention.png     attention maps of the trained model on digits test images
                    (vit_jax.visualize);
  curves.png        its training curves (vit_jax.plot).
The first two need no workdir; `--only patches architecture` skips the others.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

IMAGE_SIZE = 16  # the digits config: 8×8 digits upsampled to 16×16 ...
PATCH = 4  # ... and cut into 4×4 patches: 16 tokens + the class token
ATTENTION_DIGITS = (0, 3, 4, 7)  # the test digits shown in attention.png
FIGURES = ("patches", "architecture", "attention", "curves")


def digits_test_examples(wanted: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The first test digit of each wanted label: uint8 (n, 8, 8, 1) and labels (n,)."""
    from vit_jax.data import digits

    images, labels = digits.load_source()
    test = digits.split_indices(labels)["test"]
    index = np.array([test[labels[test] == label][0] for label in wanted])
    return images[index], labels[index]


def as_model_input(image: np.ndarray) -> np.ndarray:
    """A raw digit through the digits config's eval transform, as [0, 1] pixels for display."""
    from vit_jax.data import input_pipeline

    return (input_pipeline.preprocess_for_eval(image, IMAGE_SIZE, 1.0) + 1.0) / 2.0


def figure_patches(out: str) -> None:
    """(a) One digit, its 4×4 patch grid, and the sequence [CLS], patch 1, ..., patch 16."""
    images, _ = digits_test_examples([0])
    pixels = as_model_input(images[0])  # (16, 16, 3)
    grid = IMAGE_SIZE // PATCH
    fig = Figure(figsize=(11, 3.3), dpi=100)
    ax = fig.add_axes((0.01, 0.12, 0.22, 0.76))
    ax.imshow(pixels, interpolation="nearest")
    for k in range(1, grid):  # patch boundaries
        ax.axhline(k * PATCH - 0.5, color="#e4572e", lw=2)
        ax.axvline(k * PATCH - 0.5, color="#e4572e", lw=2)
    for r in range(grid):
        for c in range(grid):
            ax.text(c * PATCH + 0.3, r * PATCH + 0.6, str(r * grid + c + 1), color="#ffd23f",
                    fontsize=9, va="top", fontweight="bold")
    ax.set_title(f"{IMAGE_SIZE}×{IMAGE_SIZE} input, {PATCH}×{PATCH} patches", fontsize=10)
    ax.set_axis_off()
    fig.add_artist(FancyArrowPatch((0.245, 0.5), (0.3, 0.5), transform=fig.transFigure,
                                   arrowstyle="-|>", mutation_scale=18, lw=2, color="0.3"))
    seq = fig.add_axes((0.31, 0.05, 0.68, 0.9))
    n = grid * grid + 1
    seq.set_xlim(-0.2, n * 1.15)
    seq.set_ylim(-1.6, 2.2)
    seq.set_aspect("equal")
    seq.set_axis_off()
    seq.add_patch(Rectangle((0, 0), 1, 1, color="#8e7dbe"))
    seq.text(0.5, 0.5, "CLS", ha="center", va="center", fontsize=8, color="white",
             fontweight="bold")
    for t in range(1, n):
        r, c = divmod(t - 1, grid)
        patch = pixels[r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH]
        x = t * 1.15
        seq.imshow(patch, extent=(x, x + 1, 0, 1), interpolation="nearest")
        seq.add_patch(Rectangle((x, 0), 1, 1, fill=False, ec="#e4572e", lw=1.2))
    for t in range(n):
        seq.text(t * 1.15 + 0.5, -0.25, str(t), ha="center", va="top", fontsize=8)
    seq.text(n * 1.15 / 2, -0.9, "position  (each token also gets a learned position "
             "embedding)", ha="center", va="top", fontsize=9, color="0.3")
    seq.text(n * 1.15 / 2, 1.35, f"token sequence: class token + {n - 1} patches, each "
             f"{PATCH}×{PATCH}×3 = {PATCH * PATCH * 3} numbers → linear projection to D",
             ha="center", va="bottom", fontsize=10)
    seq.set_xlim(-0.2, n * 1.15)  # imshow resets the limits
    seq.set_ylim(-1.6, 2.2)
    fig.savefig(out)


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str,
         fontsize: float = 10) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,"
                                "rounding_size=0.12", fc=color, ec="0.25", lw=1.2))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], **kwargs) -> None:
    style = dict(arrowstyle="-|>", mutation_scale=14, lw=1.4, color="0.25", shrinkA=0,
                 shrinkB=0)
    ax.add_patch(FancyArrowPatch(start, end, **{**style, **kwargs}))


def figure_architecture(out: str) -> None:
    """(b) Patches → projection → +CLS, +pos → L × block → LN → head; the block expanded."""
    fig = Figure(figsize=(10, 7.2), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 7.2)
    ax.set_axis_off()
    # Main flow (left column), top to bottom.
    x, w = 2.4, 4.0
    flow = [  # (centre y, height, text, colour)
        (6.7, 0.52, "image (H×W×3) → N patches of P×P×3", "#fde2c8"),
        (5.85, 0.52, "linear projection (patch embedding)\nN × D tokens", "#f9c784"),
        (5.0, 0.52, "prepend learned class token [CLS]\n(1 + N) × D", "#d9cef0"),
        (4.15, 0.52, "+ learned position embeddings", "#d9cef0"),
        (3.05, 0.8, "Transformer encoder\nL × block  (see right)", "#bfe3c0"),
        (1.95, 0.52, "LayerNorm", "#e8e8e8"),
        (1.1, 0.52, "head: Dense on the [CLS] token\n(\"gap\": mean of all tokens)", "#f4a6a6"),
    ]
    for y, h, text, color in flow:
        _box(ax, x, y, w, h, text, color)
    for (y0, h0, *_), (y1, h1, *_) in itertools.pairwise(flow):
        _arrow(ax, (x, y0 - h0 / 2), (x, y1 + h1 / 2))
    _arrow(ax, (x, 1.1 - 0.26), (x, 0.35))
    ax.text(x, 0.22, "class logits → softmax", ha="center", va="center", fontsize=10)
    # The encoder block expanded (right column), bottom (input) to top (output).
    bx, bw, bh = 7.6, 2.6, 0.5
    ax.add_patch(FancyBboxPatch((bx - 1.95, 0.55), 3.9, 6.05, boxstyle="round,pad=0.05",
                                fc="#f2faf2", ec="#4c9a52", lw=1.5, ls="--"))
    ax.text(bx + 1.85, 6.45, "× L", ha="right", va="top", fontsize=15, fontweight="bold",
            color="#2e6b33")
    ax.text(bx, 6.75, "encoder block (pre-LayerNorm)", ha="center", va="bottom", fontsize=11)
    layers = [
        (1.55, "LayerNorm", "#e8e8e8"),
        (2.45, "multi-head self-attention\nK heads, softmax(QKᵀ/√Dh)·V", "#9fd3e0"),
        (4.0, "LayerNorm", "#e8e8e8"),
        (4.9, "MLP: Dense → GELU → Dense", "#f7d08a"),
    ]
    adds = (3.3, 5.75)  # the residual additions
    _arrow(ax, (bx, 0.7), (bx, 1.55 - bh / 2))
    ax.text(bx + 0.1, 0.8, "tokens in", ha="left", va="center", fontsize=9, color="0.3")
    for y, text, color in layers:
        _box(ax, bx, y, bw, bh + (0.15 if "\n" in text else 0), text, color, fontsize=9.5)
    for y_add, (y_a, y_b) in zip(adds, ((1.55, 2.45), (4.0, 4.9)), strict=True):
        ax.add_patch(_circle(bx, y_add))
        ax.text(bx, y_add, "+", ha="center", va="center", fontsize=13, fontweight="bold")
        _arrow(ax, (bx, y_a + bh / 2), (bx, y_b - bh / 2 - 0.075))
        _arrow(ax, (bx, y_b + bh / 2 + 0.075), (bx, y_add - 0.17))
        # Residual path: from below the LayerNorm around the right side into the sum.
        skip_x = bx + bw / 2 + 0.35
        start_y = y_a - bh / 2 - 0.15
        ax.plot([bx, skip_x, skip_x], [start_y, start_y, y_add], color="0.25", lw=1.4)
        _arrow(ax, (skip_x, y_add), (bx + 0.17, y_add))
    _arrow(ax, (bx, 3.3 + 0.17), (bx, 4.0 - bh / 2))
    _arrow(ax, (bx, 5.75 + 0.17), (bx, 6.3))
    ax.text(bx + 0.1, 6.2, "tokens out", ha="left", va="center", fontsize=9, color="0.3")
    ax.text(bx + bw / 2 + 0.45, 2.0, "residual", rotation=90, ha="left", va="center",
            fontsize=8.5, color="0.35")
    # Dashed "zoom" lines from the encoder box to the expanded block.
    for y_from, y_to in ((3.45, 6.6), (2.65, 0.55)):
        ax.plot([x + w / 2, bx - 1.95], [y_from, y_to], color="#4c9a52", lw=1, ls=":")
    fig.savefig(out)


def _circle(x: float, y: float):
    """The ⊕ node of a residual sum."""
    from matplotlib.patches import Circle

    return Circle((x, y), 0.17, fc="white", ec="0.25", lw=1.3)


def figure_attention(workdir: str, out: str) -> None:
    """(c) Attention of the trained digits model on four test digits (vit_jax.visualize)."""
    from vit_jax.tools import attention_maps, prediction
    from vit_jax.weights import loading

    loaded = loading.load_model(workdir)
    raw, labels = digits_test_examples(ATTENTION_DIGITS)
    rows = []
    for image, label in zip(prediction.preprocess(loaded, list(raw)), labels, strict=True):
        maps = attention_maps.attention_maps(loaded, image)
        [(name, p)] = prediction.top_k_from_logits(loaded, maps["logits"][None], 1)[0]
        rows.append((image, maps, f"label {label} → {name} ({p:.2f})"))
    attention_maps.render(rows, out, panel_px=150)


def figure_curves(workdir: str, out: str) -> None:
    """(d) Training curves of the digits run (vit_jax.plot)."""
    from vit_jax.tools import curves

    curves.plot_curves(workdir, out, title="ViT 'testing' variant trained on digits "
                     "(configs/digits.py)")


def _quantize(path: str) -> None:
    """Rewrites a flat-colour PNG with a 256-colour palette: a third of the size."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=0)
    small.save(path, optimize=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/digits",
                        help="a trained digits workdir (for attention and curves)")
    parser.add_argument("--out", default="docs", help="folder for the PNGs")
    parser.add_argument("--only", nargs="+", choices=FIGURES, default=FIGURES,
                        help="figures to draw (default: all)")
    args = parser.parse_args(argv)
    from vit_jax import cli

    cli.quiet_logs()
    os.makedirs(args.out, exist_ok=True)
    needs_run = {"attention", "curves"} & set(args.only)
    if needs_run and not os.path.isfile(os.path.join(args.workdir, "config.json")):
        sys.exit(f"error: {args.workdir} is not a trained workdir; train one first:\n"
                 "  python -m vit_jax.train --config configs/digits.py --workdir runs/digits")
    draw = {"patches": lambda p: figure_patches(p),
            "architecture": lambda p: figure_architecture(p),
            "attention": lambda p: figure_attention(args.workdir, p),
            "curves": lambda p: figure_curves(args.workdir, p)}
    for name in args.only:
        path = os.path.join(args.out, f"{name}.png")
        draw[name](path)
        if name != "attention":  # a palette would band the attention heat maps
            _quantize(path)
        print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KB)", flush=True)


if __name__ == "__main__":
    main()
