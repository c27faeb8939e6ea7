"""The converter's command line: `python -m vit_torch IN OUT [--variant B/16] ...`.

Flags → `vit_torch.files.convert_file`. A mistake the user can fix (a `vit_core.errors`
kind) prints one `error:` line and exits with code 2; anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from vit_core.errors import run_cli
from vit_torch.files import convert_file


def main(argv: list[str] | None = None) -> int:
    """Parses the flags and converts; a `UserError` is one `error:` line and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m vit_torch",
        description="Convert ViT weights between the official .npz layout\n"
        "(google-research/vision_transformer, vit_jax), timm/vit_torch state dicts\n"
        "(.pt/.pth via torch.save, or .safetensors) and Hugging Face checkpoint\n"
        "directories (config.json + model.safetensors: ViTForImageClassification, or\n"
        "ViTModel whose pooler is the pre-logits layer). The formats follow the paths:\n"
        "a path without an extension is a Hugging Face directory.\n"
        "Nothing pickled is ever executed: .pt is read with torch.load(weights_only=True),\n"
        ".npz with allow_pickle=False.",
        epilog="examples:\n"
        "  python -m vit_torch ViT-B_16.npz vit_b16.safetensors\n"
        "  python -m vit_torch vit_b16.pt ViT-B_16.npz --variant B/16\n"
        "  python -m vit_torch ViT-B_16.npz vit-b16-hf --labels imagenet_classes.txt\n"
        "  python -m vit_torch vit-b16-hf ViT-B_16.npz\n"
        "Bad input prints one error message (no stack trace) and exits with code 2.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="input: .npz, .pt, .pth, .safetensors or a HF directory")
    parser.add_argument("dst", help="output, of another kind")
    parser.add_argument(
        "--variant", help="model variant, e.g. B/16; required to read a state dict (gives the "
        "head count), otherwise checks the checkpoint's sizes",
    )
    parser.add_argument(
        "--gelu", choices=("tanh", "exact"), help="the GELU the weights were made with, "
        "written to the spec file beside the output (NAME.spec.json) or a HF config "
        "(default: the source's spec or HF config; else tanh, as the official code; timm's "
        "ViTs use exact)",
    )
    parser.add_argument(
        "--labels", metavar="FILE", help="class names, one per line: read for a HF "
        "destination's id2label, written from a HF source's",
    )
    parser.add_argument(
        "--no-embed-class", action="store_true", help="the state dict is of a timm model "
        "built with no_embed_class=True (no position embedding for the class token)",
    )
    args = parser.parse_args(argv)
    gelu = None if args.gelu is None else args.gelu == "tanh"
    try:
        notes = run_cli(lambda: convert_file(
            args.src, args.dst, variant=args.variant, gelu_approximate=gelu,
            labels_path=args.labels, no_embed_class=args.no_embed_class))
    except SystemExit as e:  # run_cli printed the one `error:` line; callers get the code
        return int(e.code)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
