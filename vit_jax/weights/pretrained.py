"""Released ViT checkpoints by name: the file, where it comes from, and the model it needs.

`resolve(name_or_path, search_dirs)` turns `--config.init_checkpoint=NAME` (or the
`--model NAME` of predict / evaluate / visualize) into a local `.npz` and the
`config.model` options that fit it. A name's file is looked for in `search_dirs`, then in
the download cache, and downloaded into the cache on first use (`vit_jax.weights.download`: a
cache under `$VIT_JAX_CACHE`, resume, sha256 record, lock, `VIT_JAX_OFFLINE=1`, a mirror
via `$VIT_JAX_BASE_URL`); a file that cannot be had is one `DownloadError` line naming
its URL and the path to put it at.

Names (the file names below were checked against the sources named):
  * official (google-research/vision_transformer README and bucket listing): the bucket
    path without ".npz", e.g. "imagenet21k/ViT-B_16" (ImageNet-21k pre-training, with a
    pre_logits layer and a 21843-class head) or "imagenet21k+imagenet2012/ViT-B_16"
    (fine-tuned on ImageNet-1k at 384 px); the file name alone ("ViT-B_16") means the
    ImageNet-21k one, as the repository's README uses it;
  * AugReg (Steiner et al. 2021, "How to train your ViT?"): timm's names, e.g.
    "vit_base_patch16_224.augreg_in21k_ft_in1k" (timm's `vision_transformer.py` lists
    the same `.npz` URLs);
  * big_vision: its own short names (big_vision `models/vit.py` VANITY_NAMES), e.g.
    "i1k-s16-300ep" (`configs/vit_s16_i1k.py`: gap pool, sincos2d posemb, rep_size=True).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from vit_core.errors import CheckpointError, DownloadError
from vit_core.files import read_official
from vit_core.spec import DEFAULT_LAYER_NORM_EPS, ViTSpec
from vit_core.variants import HYBRIDS, VARIANTS, WIDTHS, decode_variant
from vit_jax.weights import download, hub

_VIT_MODELS = "https://storage.googleapis.com/vit_models/"
_BIG_VISION = "https://storage.googleapis.com/big_vision/"
IN21K_CLASSES = 21843
IN1K_CLASSES = 1000


@dataclasses.dataclass(frozen=True)
class Release:
    """One released checkpoint: its URL and the spec of the model stored in it."""

    url: str
    spec: ViTSpec

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def bucket_path(self) -> str:
        """The path inside its storage bucket, e.g. "imagenet21k/ViT-B_16.npz"."""
        return self.url.split("/", 4)[4]

    def model_options(self) -> dict[str, Any]:
        """`config.model` fields for this checkpoint (see `model_options_of`)."""
        return model_options_of(self.spec)


def _release(url: str, variant: str, num_classes: int, **options: Any) -> Release:
    return Release(url, ViTSpec.from_variant(variant, num_classes=num_classes, **options))


def _official(path: str, variant: str) -> Release:
    if path.startswith("imagenet21k/"):  # pre-training: pre_logits of the model's width
        width = decode_variant(variant).hidden_size
        return _release(_VIT_MODELS + path, variant, IN21K_CLASSES, representation_size=width)
    return _release(_VIT_MODELS + path, variant, IN1K_CLASSES,
                    image_size=224 if path.endswith("-224.npz") else 384)


def _augreg(file: str, variant: str) -> Release:
    """AugReg files: "...--imagenet2012-...-res_{size}.npz" are fine-tuned on ImageNet-1k."""
    if "--imagenet2012-" in file:
        size = int(file.rsplit("res_", 1)[1].removesuffix(".npz"))
        return _release(_VIT_MODELS + "augreg/" + file, variant, IN1K_CLASSES, image_size=size)
    return _release(_VIT_MODELS + "augreg/" + file, variant, IN21K_CLASSES)


def _big_vision_s16(file: str) -> Release:
    return _release(_BIG_VISION + file, "S/16", IN1K_CLASSES, classifier="gap",
                    representation_size=WIDTHS["S"].hidden_size, posemb="sincos2d")


RELEASES: dict[str, Release] = {
    **{f"imagenet21k/ViT-{v.replace('/', '_')}": _official(
        f"imagenet21k/ViT-{v.replace('/', '_')}.npz", v)
       for v in ("B/16", "B/32", "L/16", "L/32", "H/14")},
    # The paper's hybrid (§3.1), released beside the ViTs.
    "imagenet21k/R50+ViT-B_16": _official("imagenet21k/R50+ViT-B_16.npz", "R50+B/16"),
    "imagenet21k+imagenet2012/R50+ViT-B_16": _official(
        "imagenet21k+imagenet2012/R50+ViT-B_16.npz", "R50+B/16"),
    **{f"imagenet21k+imagenet2012/{stem}": _official(
        f"imagenet21k+imagenet2012/{stem}.npz", variant)
       for stem, variant in (("ViT-B_16", "B/16"), ("ViT-B_16-224", "B/16"),
                             ("ViT-B_32", "B/32"), ("ViT-L_16", "L/16"),
                             ("ViT-L_16-224", "L/16"), ("ViT-L_32", "L/32"))},
    "vit_tiny_patch16_224.augreg_in21k": _augreg(
        "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz", "Ti/16"),
    "vit_tiny_patch16_224.augreg_in21k_ft_in1k": _augreg(
        "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.03-res_224.npz", "Ti/16"),
    "vit_small_patch16_224.augreg_in21k": _augreg(
        "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz", "S/16"),
    "vit_small_patch16_224.augreg_in21k_ft_in1k": _augreg(
        "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.03-res_224.npz", "S/16"),
    "vit_small_patch16_224.augreg_in1k": _augreg(
        "S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.01-res_224.npz", "S/16"),
    "vit_base_patch32_224.augreg_in21k": _augreg(
        "B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0.npz", "B/32"),
    "vit_base_patch32_224.augreg_in21k_ft_in1k": _augreg(
        "B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.03-res_224.npz", "B/32"),
    "vit_base_patch16_224.augreg_in21k": _augreg(
        "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz", "B/16"),
    "vit_base_patch16_224.augreg_in21k_ft_in1k": _augreg(
        "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.01-res_224.npz", "B/16"),
    "vit_base_patch16_384.augreg_in21k_ft_in1k": _augreg(
        "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.01-res_384.npz", "B/16"),
    "vit_base_patch16_224.augreg_in1k": _augreg(
        "B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1"
        "--imagenet2012-steps_20k-lr_0.01-res_224.npz", "B/16"),
    "vit_base_patch8_224.augreg_in21k": _augreg(
        "B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz", "B/8"),
    "vit_base_patch8_224.augreg_in21k_ft_in1k": _augreg(
        "B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.01-res_224.npz", "B/8"),
    "vit_large_patch16_224.augreg_in21k": _augreg(
        "L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1.npz", "L/16"),
    "vit_large_patch16_224.augreg_in21k_ft_in1k": _augreg(
        "L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1"
        "--imagenet2012-steps_20k-lr_0.01-res_224.npz", "L/16"),
    # AugReg's hybrids (file names as the official README and timm's pretrained cfgs list
    # them). R_Ti_16's 384 file is fine-tuned from the same pre-training.
    "vit_tiny_r_s16_p8_224.augreg_in21k": _augreg(
        "R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz", "R+Ti/16"),
    "vit_tiny_r_s16_p8_224.augreg_in21k_ft_in1k": _augreg(
        "R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.03-res_224.npz", "R+Ti/16"),
    "vit_tiny_r_s16_p8_384.augreg_in21k_ft_in1k": _augreg(
        "R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.03-res_384.npz", "R+Ti/16"),
    "vit_small_r26_s32_224.augreg_in21k": _augreg(
        "R26_S_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0.npz", "R26+S/32"),
    "vit_small_r26_s32_224.augreg_in21k_ft_in1k": _augreg(
        "R26_S_32-i21k-300ep-lr_0.001-aug_light0-wd_0.03-do_0.1-sd_0.1"
        "--imagenet2012-steps_20k-lr_0.03-res_224.npz", "R26+S/32"),
    "vit_small_r26_s32_384.augreg_in21k_ft_in1k": _augreg(
        "R26_S_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.03-res_384.npz", "R26+S/32"),
    "vit_large_r50_s32_224.augreg_in21k": _augreg(
        "R50_L_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0.npz", "R50+L/32"),
    "vit_large_r50_s32_224.augreg_in21k_ft_in1k": _augreg(
        "R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1"
        "--imagenet2012-steps_20k-lr_0.01-res_224.npz", "R50+L/32"),
    "vit_large_r50_s32_384.augreg_in21k_ft_in1k": _augreg(
        "R50_L_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.01-res_384.npz", "R50+L/32"),
    "i1k-s16-90ep": _big_vision_s16("vit_s16_i1k_90ep.npz"),
    "i1k-s16-150ep": _big_vision_s16("vit_s16_i1k_150ep.npz"),
    "i1k-s16-300ep": _big_vision_s16("vit_s16_i1k_300ep.npz"),
}
# The README's bare file names mean the ImageNet-21k pre-trained files.
ALIASES = {name.split("/")[1]: name for name in RELEASES if name.startswith("imagenet21k/")}


def lookup(name: str) -> tuple[str, Release] | None:
    """The table entry for a name or alias (also with ".npz"), or None."""
    name = ALIASES.get(name.removesuffix(".npz"), name.removesuffix(".npz"))
    return (name, RELEASES[name]) if name in RELEASES else None


def model_options_of(spec: ViTSpec) -> dict[str, Any]:
    """`config.model` fields for a checkpoint's architecture.

    Args:
      spec: read off the file (`vit_core.files.read_official`) or a release's.

    Returns:
      variant (the one of that width and, if any, patch size), patch_size when no variant
      has it, classifier, representation_size, and posemb, num_registers, layer_norm_eps
      and gelu_approximate where they differ from the defaults.

    Raises:
      CheckpointError: the sizes match no family of vit_core/variants.py.
    """
    sizes = (spec.hidden_size, spec.num_layers, spec.num_heads, spec.mlp_dim)
    if spec.is_hybrid:  # a hybrid variant of that width and ResNet, else its fields
        hybrid = [v for v, (family, _, layers) in HYBRIDS.items()
                  if dataclasses.astuple(WIDTHS[family]) == sizes
                  and layers == spec.resnet_layers]
        table = {v: HYBRIDS[v][:2] for v in hybrid} or VARIANTS
    else:
        table = VARIANTS
    names = [v for v, (family, _) in table.items()
             if dataclasses.astuple(WIDTHS[family]) == sizes]
    if not names:
        raise CheckpointError(
            f"The checkpoint's sizes (width, depth, heads, MLP) = {sizes} match no variant in "
            "vit_core/variants.py."
        )
    exact = [v for v in names if table[v][1] == spec.patch_size]
    options: dict[str, Any] = {"variant": (exact or names)[0]}
    if not exact:
        options["patch_size"] = spec.patch_size
    if spec.is_hybrid and options["variant"] not in HYBRIDS:
        options["resnet_layers"] = spec.resnet_layers
    if spec.resnet_width != 1:
        options["resnet_width"] = spec.resnet_width
    options.update(classifier=spec.classifier, representation_size=spec.representation_size)
    defaults = {"posemb": "learn", "num_registers": 0,
                "layer_norm_eps": DEFAULT_LAYER_NORM_EPS, "gelu_approximate": True}
    options.update({k: getattr(spec, k) for k, v in defaults.items() if getattr(spec, k) != v})
    return options


def resolve(
    name_or_path: str | os.PathLike, search_dirs: Sequence[str | os.PathLike] = ()
) -> tuple[str, dict[str, Any]]:
    """A checkpoint path or released name → (local `.npz` path, `config.model` options).

    An existing file is used as given (its options are read off its shapes). Otherwise a
    name from `RELEASES` (or its alias, or either with ".npz") is looked up in each of
    `search_dirs`, under its bucket path (e.g. `DIR/imagenet21k/ViT-B_16.npz`) and under
    its file name (`DIR/ViT-B_16.npz`), then fetched through the download cache
    (`vit_jax.weights.download.fetch`: used from there, or downloaded into it on first use); the
    file must hold the architecture the table gives (the official files of two families
    share a file name). An "hf-hub:" name is fetched and converted by `vit_jax.weights.hub`.

    Args:
      name_or_path: `--config.init_checkpoint`: a path, or a name such as
        "vit_base_patch16_224.augreg_in21k_ft_in1k", "imagenet21k/ViT-B_16", "ViT-B_16"
        or "i1k-s16-300ep", or a Hugging Face Hub repo "hf-hub:ORG/REPO" (fetched and
        converted by `vit_jax.weights.hub.resolve`).
      search_dirs: directories that hold downloaded checkpoints.

    Returns:
      (path, options): options are `config.model` fields (variant, classifier,
      representation_size, and patch_size/posemb where they differ from the defaults);
      set them on the config before building the model.

    Raises:
      CheckpointError: an unknown name, or a file that holds another architecture than
        its name says.
      DownloadError: the file is not at hand and cannot be downloaded (offline, no
        network, HTTP error, ...): one line with its URL and the cache path to put it at.
    """
    given = os.fspath(name_or_path)
    if os.path.isfile(given):
        return given, model_options_of(_architecture(given))
    if hub.is_hub_name(given):
        path, spec = hub.resolve(given)
        return path, model_options_of(spec)
    entry = lookup(given) or lookup(os.path.basename(given))
    if entry is None:
        raise CheckpointError(
            f"Checkpoint file not found: {given} (and not a released name; the names are the "
            "keys of vit_jax.weights.pretrained.RELEASES, e.g. "
            "vit_base_patch16_224.augreg_in21k_ft_in1k, or hf-hub:ORG/REPO)."
        )
    name, release = entry
    for directory in [os.fspath(d) for d in search_dirs]:
        for candidate in (release.bucket_path, release.filename):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                _check_release(path, name, release)
                return path, release.model_options()
    if lookup(given) is None and not os.path.isfile(download.cache_path(release.url)):
        # A mistyped path must not start a download of the file it happens to name.
        raise CheckpointError(
            f"Checkpoint file not found: {given} (its file name is that of the released "
            f"{name}: pass the name alone to download it into {download.cache_dir()}).")
    try:
        path = download.fetch(release.url)
    except DownloadError as e:
        raise DownloadError(f"{name}: {e}") from None
    _check_release(path, name, release)
    return path, release.model_options()


def _architecture(path: str) -> ViTSpec:
    return read_official(path)[1]


def _check_release(path: str, name: str, release: Release) -> None:
    """The file found for a name must hold that release's architecture."""
    found, want = _architecture(path).to_dict(), release.spec.to_dict()
    del found["variant"], want["variant"]
    if release.spec.posemb != "learn":  # a fixed posemb: the file says no image size
        del found["image_size"], want["image_size"]
    if found != want:
        diff = ", ".join(f"{k}={found.get(k)!r} (expected {want.get(k)!r})"
                         for k in sorted(set(found) | set(want)) if found.get(k) != want.get(k))
        raise CheckpointError(
            f"{path} was found for {name} but holds another model: {diff}; pass the "
            "matching name, or the path itself as --config.init_checkpoint."
        )
