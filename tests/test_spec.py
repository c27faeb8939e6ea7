"""The core: one spec and one parameter table that both frameworks' real parameters obey."""

import subprocess
import sys
import types

import jax
import numpy as np
import pytest
import torch

from vit_core import npz
from vit_core.errors import CheckpointError, ConfigError
from vit_core.params import official_shapes, param_table, spec_from_official
from vit_core.spec import ViTSpec, spec_from_config
from vit_core.variants import HYBRIDS, VARIANTS
from vit_jax.model import vit as models
from vit_jax.weights import checkpoint
from vit_torch import model as torch_vit

OPTIONS = [
    {},
    {"classifier": "gap"},
    {"classifier": "map"},
    {"posemb": "sincos2d"},
    {"representation_size": 24},
    {"num_registers": 2},
    {"classifier": "gap", "num_registers": 3, "posemb": "sincos2d"},
    {"classifier": "map", "num_registers": 1, "representation_size": 16},
    {"num_classes": 0},
    {"image_size": (48, 32)},  # a non-square grid, as the official test config trains
    {"resnet_layers": (2, 1)},  # a hybrid (paper §3.1): ResNet stages before the patches
    {"resnet_layers": (), "patch_size": 2, "classifier": "gap"},  # the root block alone
]


def _flax_shapes(spec: ViTSpec) -> dict[str, tuple[int, ...]]:
    tree = models.param_shapes(models.VisionTransformer(spec))  # per-block layout (no scan)
    return {k: tuple(v.shape) for k, v in npz.flatten(tree).items()}


def _torch_shapes(spec: ViTSpec) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = torch_vit.VisionTransformer(spec)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in
                                                                   o.items()) or "default")
def test_table_is_both_models_parameters(options):
    options = {"num_classes": 5, "image_size": 32, **options}
    spec = ViTSpec.from_variant("testing", **options)
    table = param_table(spec)
    assert _flax_shapes(spec) == official_shapes(spec)
    assert _torch_shapes(spec) == {p.timm_key: p.timm_shape for p in table}
    # Every key once; the table reads back to the same spec from shapes alone.
    keys = [k for p in table for k in p.npz_keys]
    assert len(keys) == len(set(keys))
    shapes = {k: types.SimpleNamespace(shape=s) for k, s in official_shapes(spec).items()}
    assert spec_from_official(shapes, image_size=spec.image_size) == spec


@pytest.mark.parametrize("variant", [v for v in (*VARIANTS, *HYBRIDS)
                                     if not v.startswith("testing")])
def test_table_is_both_models_parameters_for_every_variant(variant):
    spec = ViTSpec.from_variant(variant, num_classes=1000)
    assert _flax_shapes(spec) == official_shapes(spec)
    assert _torch_shapes(spec) == {p.timm_key: p.timm_shape for p in param_table(spec)}


def test_core_imports_no_framework():
    code = ("import sys, vit_core.spec, vit_core.params, vit_core.layouts, vit_core.files, "
            "vit_core.hf_config, vit_core.npz, vit_core.posemb, vit_core.errors\n"
            "bad = [m for m in ('jax', 'flax', 'torch', 'tensorflow') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_json_round_trip_and_defaults():
    spec = ViTSpec.from_variant("S/16", num_classes=10, image_size=(384, 256), num_registers=4,
                                layer_norm_eps=1e-12, gelu_approximate=False)
    back = ViTSpec.from_json(spec.to_json())
    assert back == spec and back.variant == "S/16"
    # A spec written before a field existed reads with that field's default.
    old = spec.to_dict()
    del old["num_registers"], old["layer_norm_eps"]
    assert ViTSpec.from_dict(old) == spec.replace(num_registers=0, layer_norm_eps=1e-6)


@pytest.mark.parametrize("changes, message", [
    ({"num_heads": 5}, "hidden_size 32 is not divisible by num_heads 5"),
    ({"classifier": "cls"}, "classifier must be one of"),
    ({"image_size": (30, 32)}, "Image size 30x32 is not divisible by the patch size 4"),
    ({"num_registers": -1}, "num_registers must be ≥ 0"),
    ({"layer_norm_eps": 0.0}, r"layer_norm_eps must be in \(0, 1\)"),
    ({"posemb": "sincos2d", "hidden_size": 30, "num_heads": 3}, "multiple of 4"),
])
def test_validate_names_the_field(changes, message):
    with pytest.raises(ConfigError, match=message) as e:
        ViTSpec.from_variant("testing", **{"image_size": 32, **changes})
    assert "\n" not in str(e.value)


def test_bad_json_and_unknown_fields():
    with pytest.raises(ConfigError, match="Not a ViT spec JSON"):
        ViTSpec.from_json("{")
    with pytest.raises(ConfigError, match=r"Unknown ViT spec field\(s\) \['depth'\]"):
        ViTSpec.from_dict({**ViTSpec.from_variant("testing").to_dict(), "depth": 3})
    with pytest.raises(ConfigError, match=r"Unknown ViT option\(s\) \['hidden_sise'\]"):
        ViTSpec.from_variant("testing", hidden_sise=3)


def test_spec_from_config_keeps_the_variant_size_for_none():
    spec = spec_from_config({"variant": "B/16", "patch_size": None, "classifier": "gap",
                             "representation_size": None}, image_size=224, num_classes=7)
    assert (spec.patch_size, spec.classifier, spec.num_classes) == (16, "gap", 7)


def test_non_square_grid_loads_where_the_model_fits_it(tmp_path):
    spec = ViTSpec.from_variant("testing", num_classes=3, image_size=(48, 32))
    model = models.VisionTransformer(spec)
    images = np.zeros((1, 48, 32, 3), np.float32)
    params = model.init(jax.random.key(0), images)["params"]
    checkpoint.save_npz(tmp_path / "m.npz", params)
    loaded = checkpoint.load_npz(tmp_path / "m.npz")  # the official code loads these too
    np.testing.assert_array_equal(model.apply({"params": loaded}, images),
                                  model.apply({"params": params}, images))
    with torch.device("meta"):
        torch_model = torch_vit.VisionTransformer(spec)
    assert tuple(torch_model.pos_embed.shape) == (1, 1 + 12 * 8, 32)
    flat = npz.read_npz(tmp_path / "m.npz")
    with pytest.raises(CheckpointError, match=r"holds 96 patch positions, but 32x32 images "
                                              r"give 64"):
        spec_from_official(flat, image_size=(32, 32))
