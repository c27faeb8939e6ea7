"""The user-facing tools: predict, visualize (attention maps) and plot (training curves)."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from vit_jax import plot, predict, visualize
from vit_jax.model import vit as models
from vit_jax.tools import attention_maps, curves, prediction
from vit_jax.weights import checkpoint, loading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROB = re.compile(r"\((\d\.\d{4})\)")


@pytest.fixture
def workdir(tiny_workdir):
    """12 steps of the tiny digits model (8×8 images, 2×2 patches of 4×4), read only."""
    return tiny_workdir[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A digit as 8×8 grayscale PNG, 30×20 RGBA PNG and 50×50 RGB JPEG, plus a non-image."""
    from vit_jax.data import digits

    folder = tmp_path_factory.mktemp("images")
    pixels = digits.load_source()[0][0, ..., 0]  # uint8 (8, 8)
    gray = Image.fromarray(pixels)
    paths = [str(folder / n) for n in ("gray.png", "rgba.png", "rgb.jpg", "broken.png")]
    gray.save(paths[0])
    gray.resize((30, 20)).convert("RGBA").save(paths[1])
    gray.resize((50, 50)).convert("RGB").save(paths[2])
    with open(paths[3], "w") as f:
        f.write("not an image")
    return paths


def _check_top5(top, names):
    assert len(top) == 5 and len({n for n, _ in top}) == 5
    assert {n for n, _ in top} <= set(names)
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6


def test_predict_function_matches_the_model(workdir, images):
    results = prediction.predict(workdir, images[:3], top_k=5)
    assert len(results) == 3
    for top in results:
        _check_top5(top, [str(i) for i in range(10)])
    # The 8×8 PNG at image_size 8 (eval_resize_ratio 1.0) is just rescaled: compare with
    # the model applied directly.
    loaded = loading.load_model(workdir)
    pixels = np.asarray(Image.open(images[0]), np.float32)[..., None].repeat(3, -1)
    logits = loading.predict_logits(loaded, pixels[None] / 127.5 - 1.0)[0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert results[0][0] == (str(int(probs.argmax())), pytest.approx(probs.max(), abs=1e-5))


def test_predict_on_a_released_layout_npz(workdir, images, digits_dir, tmp_path):
    loaded = loading.load_model(workdir)
    npz = str(tmp_path / "model.npz")
    checkpoint.save_npz(npz, loaded.params)
    from_npz = loading.load_model(npz, dataset="digits", data_dir=digits_dir)
    assert from_npz.class_names == [str(i) for i in range(10)]
    batch = prediction.preprocess(from_npz, [prediction.load_image(p) for p in images[:2]])
    np.testing.assert_allclose(loading.predict_logits(from_npz, batch),
                               loading.predict_logits(loaded, batch), atol=1e-5)
    for top in prediction.predict(npz, images[:2], top_k=3):  # no dataset: class indices
        assert len(top) == 3 and all(name.isdigit() for name, _ in top)


def readme_images() -> list[str]:
    """The input images (not `--out`) of the README's predict and visualize commands."""
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    found = []
    for args in re.findall(r"^python -m vit_jax\.(?:predict|visualize) (.*)$", readme, re.M):
        words = args.split("#")[0].split()
        found += [
            w
            for before, w in zip(["", *words], words, strict=False)
            if before != "--out" and w.endswith((".png", ".jpg"))
        ]
    return found


def test_readme_sample_image_is_shipped_and_predicted(workdir):
    found = readme_images()
    assert found, "the README's quick start names no image"
    spec = importlib.util.spec_from_file_location(
        "make_samples", os.path.join(REPO, "docs", "samples", "make_samples.py")
    )
    make_samples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_samples)
    for path in sorted(set(found)):
        full = os.path.join(REPO, path)
        assert os.path.isfile(full), f"README names {path}, which is not in the repository"
        pixels = prediction.load_image(full)
        name = os.path.basename(path)  # the file holds what make_samples.py writes
        np.testing.assert_array_equal(pixels, make_samples.sample_digit(make_samples.SAMPLES[name]))
        [top] = prediction.predict(workdir, [full], top_k=5)
        _check_top5(top, [str(i) for i in range(10)])


def test_predict_cli_prints_top5_per_image(workdir, images, capsys):
    # In-process: what is checked is the printout (exit codes and stderr: the tests below).
    predict.main(["--checkpoint", workdir, *images[:2]])  # returns: no SystemExit
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [line.split(": ")[0] for line in lines] == images[:2]
    for line in lines:
        probs = [float(p) for p in PROB.findall(line)]
        assert len(probs) == 5 and sum(probs) <= 1.0 + 1e-3


def test_evaluate_cli_unknown_config_field_is_one_error_line(tmp_path):
    flags = ["--checkpoint", str(tmp_path), "--config", "configs/digits.py"]
    run = subprocess.run(
        [sys.executable, "-m", "vit_jax.evaluate", *flags, "--config.nonexistent=1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.splitlines() == [
        "error: --config.nonexistent: the config has no field 'nonexistent' (every field is "
        "listed in configs/default.py)"
    ], run.stderr


def test_cli_missing_checkpoint_is_one_error_line(images, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "vit_jax.visualize", "--checkpoint", str(tmp_path / "nope"),
         images[0], "--out", str(tmp_path / "a.png")],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert re.search(r"^error: No checkpoint at .*nope", run.stderr, re.MULTILINE)


@pytest.mark.parametrize("tool, argv, message", [
    (predict, ["--checkpoint", "{wd}", "{missing}"], "No image file"),
    (predict, ["--checkpoint", "{wd}", "{broken}"], "Cannot read"),
    (predict, ["--checkpoint", "{tmp}", "{image}"], "not a vit_jax workdir"),
    (predict, ["--checkpoint", "{image}", "{image}"], "is not a checkpoint"),
    (predict, ["--checkpoint", "{bad_npz}", "{image}"], "Not a valid .npz (zip) file"),
    (visualize, ["--checkpoint", "{wd}", "{image}", "--out", "{tmp}/no/dir.png"], "no folder"),
    (plot, ["{tmp}", "--out", "{tmp}/c.png"], "not a training workdir"),
    (plot, ["{tmp}/missing", "--out", "{tmp}/c.png"], "No workdir"),
])
def test_user_errors_exit_2(tool, argv, message, workdir, images, tmp_path, capsys):
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_text("truncated")
    values = dict(wd=workdir, missing=str(tmp_path / "missing.png"), broken=images[3],
                  tmp=str(tmp_path), image=images[0], bad_npz=str(bad_npz))
    with pytest.raises(SystemExit) as exit_info:
        tool.main([a.format(**values) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_attention_maps_are_distributions(workdir, images):
    loaded = loading.load_model(workdir)
    image = prediction.preprocess(loaded, [prediction.load_image(images[1])])[0]
    maps = attention_maps.attention_maps(loaded, image)
    assert maps["heads"].shape == (4, 2, 2) and maps["rollout"].shape == (2, 2)
    assert maps["logits"].shape == (10,)
    np.testing.assert_allclose(maps["heads"].sum(axis=(1, 2)), 1.0, atol=1e-6)
    np.testing.assert_allclose(maps["rollout"].sum(), 1.0, atol=1e-6)
    assert (maps["heads"] >= 0).all() and (maps["rollout"] >= 0).all()


def test_attention_maps_of_a_gap_model():
    model = models.create_model("testing", num_classes=3, classifier="gap")
    params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 12, 12, 3), np.float32))
    loaded = loading.LoadedModel(model, params["params"], 12, None, None)
    maps = attention_maps.attention_maps(loaded, np.zeros((12, 12, 3), np.float32))
    assert maps["heads"].shape == (4, 3, 3) and maps["rollout"].shape == (3, 3)
    np.testing.assert_allclose(maps["rollout"].sum(), 1.0, atol=1e-6)


def test_attention_rollout_is_row_stochastic():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 2, 5, 5))  # 3 blocks, 2 heads, 5 tokens
    attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    flow = attention_maps.attention_rollout(list(attn))
    np.testing.assert_allclose(flow.sum(-1), 1.0, atol=1e-12)
    # One block: heads averaged, identity added, renormalised.
    expected = (attn[0].mean(0) + np.eye(5)) / 2.0
    np.testing.assert_allclose(attention_maps.attention_rollout([attn[0]]), expected, atol=1e-12)


def test_visualize_writes_a_png_of_the_expected_size(workdir, images, tmp_path):
    out = str(tmp_path / "attn.png")
    visualize.main(["--checkpoint", workdir, images[0], images[2], "--out", out,
                    "--panel_size", "64"])
    assert Image.open(out).size == attention_maps.figure_size(2, 4, 64)


def test_plot_writes_curves(workdir, tmp_path):
    out = str(tmp_path / "curves.png")
    plot.main([workdir, "--out", out])
    assert Image.open(out).size == (1000, 380)
    series = curves.curves(curves.read_history(workdir))
    assert series["loss"]["train"][0] == [4, 8, 12]
    assert series["accuracy"]["validation"][0] == [12] and "test" in series["accuracy"]


def test_history_of_a_resumed_run_keeps_the_last_record(tmp_path):
    records = [{"step": 4, "split": "train", "loss": 2.0, "accuracy": 0.1},
               {"step": 8, "split": "train", "loss": 1.5, "accuracy": 0.2},
               {"step": 8, "split": "train", "loss": 1.4, "accuracy": 0.3}]  # after a resume
    with open(tmp_path / "history.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.write('{"step": 12, "spl')  # cut off by a crash
    series = curves.curves(curves.read_history(str(tmp_path)))
    assert series["loss"]["train"] == ([4, 8], [2.0, 1.4])
