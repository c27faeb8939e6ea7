"""Export a trained run (the library of `python -m vit_jax.export`).

`export` writes the newest (or `--step N`) checkpoint of a training workdir as
  * npz:  the official `.npz` layout, with `OUT.spec.json` beside it (`vit_core.files`);
  * timm: a timm `VisionTransformer` state dict, `.safetensors` (load it with
          `model.load_state_dict(safetensors.torch.load_file(OUT), strict=True)` into the
          `timm.create_model(...)` line the command prints);
  * hf:   a Hugging Face directory (`config.json` + `model.safetensors`) that
          `ViTForImageClassification.from_pretrained(OUT)` loads; the class names of the
          run's dataset (e.g. a folder dataset's class folders) become `id2label`.
The format follows OUT (`.npz`, `.safetensors`, anything else: a directory) unless
`--format` says. The conversions are `vit_core.layouts`' (numpy; bit-exact), the
safetensors files are written with `safetensors.numpy`: no torch here.
"""

from __future__ import annotations

import json
import os
from typing import Any

from vit_core.errors import CheckpointError, ConfigError
from vit_core.files import write_official, write_spec
from vit_core.hf_config import make_config
from vit_core.layouts import check_hf_compatible, official_to_hf, official_to_timm
from vit_core.npz import atomic_write
from vit_core.spec import DEFAULT_LAYER_NORM_EPS, ViTSpec
from vit_jax.weights import checkpoint, hub, loading

FORMATS = ("npz", "timm", "hf")
HF_WEIGHTS = "model.safetensors"


def format_of(out: str, fmt: str | None) -> str:
    """The format to write: `fmt`, else by OUT's extension (a directory: "hf")."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}.")
        return fmt
    if out.endswith(".npz"):
        return "npz"
    if out.endswith(".safetensors"):
        return "timm"
    return "hf"


def _not_a_workdir(path: str) -> str | None:
    """What `path` is when it is a model file or directory rather than a workdir."""
    if os.path.isfile(path):
        kind = ("an .npz checkpoint" if path.endswith(".npz") else
                "a state dict file" if path.endswith((".safetensors", ".pt", ".pth")) else
                "a file")
        return (f"{path} is {kind}, not a training workdir: export takes a workdir (python -m "
                f"vit_jax.train --workdir ...); `python -m vit_torch {path} OUT` converts a "
                "model file, and predict / evaluate take it as --checkpoint.")
    if os.path.isdir(path) and hub.is_model_dir(path):
        return (f"{path} is a Hugging Face / timm model directory, not a training workdir: "
                f"`python -m vit_torch {path} OUT.npz` converts it, and predict / evaluate "
                "take it as --checkpoint.")
    return None


def load_run(workdir: str, step: int | None = None
             ) -> tuple[dict[str, Any], ViTSpec, list[str] | None]:
    """A workdir's checkpoint as official arrays, their spec and the class names.

    Args:
      workdir: a training workdir.
      step: the checkpoint step; None: the newest.

    Returns:
      (flat official arrays, spec, class names of the run's dataset or None).

    Raises:
      CheckpointError: not a workdir (the message says what it is and what takes it), no
        checkpoint, or no checkpoint of `step`.
    """
    misplaced = _not_a_workdir(workdir)
    if misplaced:
        raise CheckpointError(misplaced)
    if not os.path.isdir(workdir):
        raise CheckpointError(f"No workdir at {workdir}.")
    loaded = loading.load_model(workdir, step=step)
    flat = checkpoint.params_to_npz_dict(loaded.params)
    return flat, loaded.model.spec, loaded.class_names


def timm_create_args(spec: ViTSpec) -> dict[str, Any]:
    """`timm.create_model("vit_base_patch16_224", **args)` arguments of a model of `spec`.

    Raises:
      CheckpointError: a model timm's `VisionTransformer` cannot hold (a pre-logits layer,
        a LayerNorm epsilon other than timm's 1e-6).
    """
    if spec.representation_size is not None:
        raise CheckpointError("The model has a pre-logits layer (representation_size), which "
                              "timm's VisionTransformer does not have; export --format hf "
                              "(its ViTModel pooler) or npz.")
    if spec.layer_norm_eps != DEFAULT_LAYER_NORM_EPS:
        raise CheckpointError(f"The model's LayerNorm epsilon is {spec.layer_norm_eps}, timm's "
                              f"ViT has {DEFAULT_LAYER_NORM_EPS}; export --format hf or npz.")
    if spec.posemb != "learn":
        raise CheckpointError("The model has a fixed sin-cos position embedding, which timm's "
                              "VisionTransformer does not build; export --format npz.")
    args: dict[str, Any] = dict(
        img_size=tuple(spec.image_size), patch_size=spec.patch_size, embed_dim=spec.hidden_size,
        depth=spec.num_layers, num_heads=spec.num_heads,
        mlp_ratio=spec.mlp_dim / spec.hidden_size, num_classes=spec.num_classes)
    if spec.classifier == "gap":  # the official "gap": mean after the final norm
        args.update(class_token=False, global_pool="avg", fc_norm=False)
    elif spec.classifier == "map":
        args.update(class_token=False, global_pool="map")
    if spec.num_registers:
        args["reg_tokens"] = spec.num_registers
    if spec.gelu_approximate:  # vit_jax's default, the official code's tanh GELU
        args["act_layer"] = "gelu_tanh"
    return args


def _safetensors_bytes(sd: dict[str, Any]) -> bytes:
    from safetensors.numpy import save

    return save(sd, metadata={"format": "pt"})  # transformers refuses files without it


def export(workdir: str, out: str, *, step: int | None = None, fmt: str | None = None
           ) -> tuple[str, str]:
    """Writes a workdir's checkpoint as an official npz, a timm state dict or a HF directory.

    Args:
      workdir: a training workdir.
      out: the `.npz`, the `.safetensors`, or the HF directory (created).
      step: the checkpoint step; None: the newest.
      fmt: "npz", "timm" or "hf"; None: by `out` (see `format_of`).

    Returns:
      (the format written, a line saying what was written and how to load it).

    Raises:
      CheckpointError / ConfigError: a workdir that is not one, a step that is not there, a
        model the format cannot hold (before anything is written), or OUT misplaced.
    """
    fmt = format_of(out, fmt)
    if fmt == "hf" and os.path.isfile(out):
        raise ConfigError(f"{out} is a file; --format hf writes a directory (config.json + "
                          f"{HF_WEIGHTS}): give a directory path.")
    if fmt != "hf" and os.path.isdir(out):
        raise ConfigError(f"{out} is a directory; --format {fmt} writes one file: give a file "
                          "path, or --format hf for a Hugging Face directory.")
    flat, spec, labels = load_run(workdir, step)
    if fmt == "npz":
        write_official(out, flat, spec)
        return fmt, f"wrote {out} (and its spec, {os.path.splitext(out)[0]}.spec.json)"
    if fmt == "timm":
        args = timm_create_args(spec)  # refuses before writing
        data = _safetensors_bytes(official_to_timm(flat, spec))
        atomic_write(out, lambda f: f.write(data))
        write_spec(out, spec)
        call = ", ".join(f"{k}={v!r}" for k, v in args.items())
        return fmt, (f"wrote {out}; load it with timm.create_model('vit_base_patch16_224', "
                     f"pretrained=False, {call}).load_state_dict("
                     f"safetensors.torch.load_file({out!r}), strict=True)")
    check_hf_compatible(spec)
    config = make_config(spec, labels=labels)
    data = _safetensors_bytes(official_to_hf(flat, spec))
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write(os.path.join(out, HF_WEIGHTS), lambda f: f.write(data))
    atomic_write(os.path.join(out, "config.json"), lambda f: f.write(text.encode()))
    return fmt, (f"wrote {out}/ (config.json, {HF_WEIGHTS}); load it with "
                 f"transformers.ViTForImageClassification.from_pretrained({out!r})")
