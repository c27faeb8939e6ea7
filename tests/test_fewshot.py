"""Few-shot linear evaluation (vit_jax.fewshot) against independent references.

The regression is checked against scikit-learn's `Ridge` / `RidgeClassifier` and numpy's
`lstsq` on the same whitened, bias-padded features and ±1 targets; the features against
the model's own `pre_logits`; the command line and the training loop end to end on the
bundled digits.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import Ridge, RidgeClassifier

from conftest import tiny_digits_config
from vit_jax import fewshot
from vit_jax.data import input_pipeline
from vit_jax.model import vit as models
from vit_jax.tools import curves, linear_fewshot
from vit_jax.training import trainer
from vit_jax.weights import checkpoint

L2 = linear_fewshot.DEFAULT_L2_REG


def reference_design(x: np.ndarray) -> np.ndarray:
    """big_vision's preprocessing written out again: whiten by the shots' stats, pad 100."""
    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-5)
    return np.hstack([z, np.full((len(x), 1), 100.0)])


def clusters(rng, num_classes: int, per_class: int, dim: int, spread: float = 0.3):
    centres = rng.normal(size=(num_classes, dim)) * 3
    labels = np.repeat(np.arange(num_classes), per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


@pytest.mark.parametrize("n, dim", [(60, 8), (12, 40)])  # N ≥ D+1 (primal) and N < D (dual)
def test_solution_equals_sklearn_ridge_and_lstsq(n, dim):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)) * rng.uniform(0.1, 5, size=dim) + rng.normal(size=dim)
    labels = np.arange(n) % 4
    sol = linear_fewshot.solve_lsr(x, labels, 4, L2)
    design = reference_design(x)
    targets = 2.0 * (labels[:, None] == np.arange(4)) - 1.0
    ridge = Ridge(alpha=L2, fit_intercept=False, solver="svd").fit(design, targets)
    np.testing.assert_allclose(sol["weights"], ridge.coef_.T, atol=1e-5, rtol=1e-5)
    # Ridge as ordinary least squares on the system stacked with √λ·I.
    stacked = np.vstack([design, np.sqrt(L2) * np.eye(dim + 1)])
    lstsq = np.linalg.lstsq(stacked, np.vstack([targets, np.zeros((dim + 1, 4))]), rcond=None)[0]
    np.testing.assert_allclose(sol["weights"], lstsq, atol=1e-5, rtol=1e-5)
    test = rng.normal(size=(7, dim))
    test_design = (test - x.mean(0)) / (x.std(0) + 1e-5)
    test_design = np.hstack([test_design, np.full((7, 1), 100.0)])
    np.testing.assert_allclose(linear_fewshot.predict_lsr(sol, test), ridge.predict(test_design),
                               atol=1e-5, rtol=1e-5)


def test_shot_selection_is_nested_per_class_and_seeded():
    labels = np.array([0] * 7 + [1] * 3 + [2] * 30)
    a = linear_fewshot.shot_indices(labels, 3, (1, 5, 10), seed=0)
    assert [np.bincount(labels[a[k]], minlength=3).tolist() for k in (1, 5, 10)] == [
        [1, 1, 1], [5, 3, 5], [7, 3, 10]]  # a class with fewer gives all it has
    for c in range(3):
        assert set(a[1][labels[a[1]] == c]) <= set(a[5][labels[a[5]] == c])
    b = linear_fewshot.shot_indices(labels, 3, (10,), seed=0)
    np.testing.assert_array_equal(a[10], b[10])
    assert not np.array_equal(linear_fewshot.shot_indices(labels, 3, (10,), seed=1)[10], a[10])


def test_accuracy_equals_ridge_classifier_per_seed():
    rng = np.random.default_rng(1)
    train_x, train_y = clusters(rng, 5, 40, 16, spread=4.0)  # overlapping: not all correct
    test_x, test_y = clusters(np.random.default_rng(1), 5, 40, 16, spread=4.0)
    test_x = test_x + rng.normal(size=test_x.shape)
    got = linear_fewshot.fewshot_accuracy(train_x, train_y, test_x, test_y, 5, (2, 10), seeds=2)
    for seed in range(2):
        for k, idx in linear_fewshot.shot_indices(train_y, 5, (2, 10), seed).items():
            x = train_x[idx]
            clf = RidgeClassifier(alpha=L2, fit_intercept=False).fit(
                reference_design(x), train_y[idx])  # sklearn encodes the classes as ±1
            z = np.hstack([(test_x - x.mean(0)) / (x.std(0) + 1e-5),
                           np.full((len(test_x), 1), 100.0)])
            assert got[k][seed] == pytest.approx(np.mean(clf.predict(z) == test_y), abs=1e-12)
    assert 0.2 < got[2][0] < 1.0 and got[10][0] > got[2][0] - 0.2


def test_separable_clusters_are_solved():
    rng = np.random.default_rng(2)
    train_x, train_y = clusters(rng, 4, 30, 12)
    test_x, test_y = clusters(np.random.default_rng(2), 4, 30, 12)
    result = linear_fewshot.fewshot_accuracy(train_x, train_y, test_x, test_y, 4, (1, 5), seeds=3)
    assert linear_fewshot.summarize(result) == {"1shot": 1.0, "5shot": 1.0}


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    """A randomly initialised testing model (image size 8, patch 4) as an official .npz."""
    model = models.create_model("testing", num_classes=10, patch_size=4)
    params = model.init(jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))["params"]
    path = str(tmp_path_factory.mktemp("npz") / "tiny.npz")
    checkpoint.save_npz(path, params)
    return path, model, params


def test_features_are_the_models_pre_logits_of_the_eval_transform(digits_dir, tiny_npz):
    _, model, params = tiny_npz
    data = tiny_digits_config(digits_dir)
    feats, labels = linear_fewshot.extract_features(model, params, data, "test[:70]", batch_size=32)
    batch = next(input_pipeline.create_eval_iter(data, "test", global_batch_size=5))
    pre_logits = jax.jit(lambda p, x: model.apply({"params": p}, x, return_features=True)[1][
        "pre_logits"])(params, batch["image"])
    assert feats.shape == (70, 32) and labels.shape == (70,)  # the last batch's padding dropped
    np.testing.assert_allclose(feats[:5], np.asarray(pre_logits), atol=1e-5)
    np.testing.assert_array_equal(labels[:5], batch["label"])


def test_evaluate_fewshot_of_an_npz(digits_dir, tiny_npz):
    path, model, params = tiny_npz
    got = linear_fewshot.evaluate_fewshot(path, "digits", data_dir=digits_dir, shots=(1, 3),
                                          seeds=2)
    data = tiny_digits_config(digits_dir, eval_resize_ratio=0.875)  # a .npz's default
    train_f = linear_fewshot.extract_features(model, params, data, "train")
    test_f = linear_fewshot.extract_features(model, params, data, "test")
    assert got == linear_fewshot.fewshot_accuracy(*train_f, *test_f, 10, (1, 3), 2)
    assert all(len(v) == 2 and 0.0 <= min(v) <= max(v) <= 1.0 for v in got.values())


@pytest.mark.parametrize("args, fragment", [
    (["--shots", "1,x"], "--shots takes whole numbers"),
    (["--shots", "0,5"], "shots must be whole numbers ≥ 1"),
    (["--seeds", "0"], "seeds must be at least 1"),
    (["--l2_reg", "0"], "l2_reg must be > 0"),
    (["--test_split", "nope"], "has no split 'nope'"),
    ([], "A .npz carries no dataset: pass --dataset"),
])
def test_cli_mistakes_are_one_error_line(digits_dir, tiny_npz, capsys, args, fragment):
    dataset = [] if not args else ["--dataset", "digits", "--data_dir", digits_dir]
    with pytest.raises(SystemExit) as exit_info:
        fewshot.main(["--checkpoint", tiny_npz[0], *dataset, *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


def test_cli_missing_checkpoint_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fewshot.main(["--checkpoint", str(tmp_path / "none.npz"), "--dataset", "digits"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "No checkpoint at" in err[0]


def test_cli_prints_progress_and_results(digits_dir, tiny_npz, capsys):
    fewshot.main(["--checkpoint", tiny_npz[0], "--dataset", "digits", "--data_dir", digits_dir,
                  "--shots", "1,2", "--seeds", "1"])
    captured = capsys.readouterr()
    assert "features train: 1293/1293 images" in captured.err
    assert "features test: 360/360 images" in captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert sorted(result["mean"]) == ["1shot", "2shot"] and len(result["per_seed"]["1shot"]) == 1


@pytest.mark.slow
def test_training_writes_fewshot_to_history_tensorboard_and_metrics(digits_dir, tmp_path):
    config = tiny_digits_config(digits_dir, num_train_steps=8, **{
        "fewshot.every_steps": 4, "fewshot.shots": (1, 5), "fewshot.seeds": 2,
        "fewshot.train_split": "train[:300]", "fewshot.test_split": "test[:100]"})
    workdir = str(tmp_path / "wd")
    final = trainer.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "history.jsonl")) as f:
        rows = [json.loads(line) for line in f if '"fewshot"' in line]
    assert [r["step"] for r in rows] == [4, 8]
    assert all(r["dataset"] == "digits" and set(r) >= {"1shot", "5shot"} for r in rows)
    assert final["fewshot"] == {"dataset": "digits", "1shot": rows[-1]["1shot"],
                                "5shot": rows[-1]["5shot"]}
    # The same figure from the final checkpoint through the library call.
    again = linear_fewshot.evaluate_fewshot(workdir, train_split="train[:300]",
                                     test_split="test[:100]", shots=(1, 5), seeds=2)
    assert linear_fewshot.summarize(again) == {k: final["fewshot"][k] for k in ("1shot", "5shot")}
    from tensorboard.backend.event_processing import event_accumulator

    events = event_accumulator.EventAccumulator(workdir)
    events.Reload()
    tags = events.Tags()["tensors"] + events.Tags()["scalars"]
    assert "fewshot/digits_5shot" in tags, tags
    # `python -m vit_jax.plot` draws them in a third panel, one series per shot count.
    series = curves.plot_curves(workdir, str(tmp_path / "curves.png"))
    assert series["fewshot"] == {f"digits {k}-shot": ([4, 8], [r[f"{k}shot"] for r in rows])
                                 for k in (1, 5)}
    assert Image.open(tmp_path / "curves.png").size == (1500, 380)


@pytest.mark.parametrize("layout", ["sharded", "pmap-replica"])
def test_evaluator_takes_params_as_the_layouts_hold_them(digits_dir, tiny_npz, layout):
    _, model, params = tiny_npz
    data = tiny_digits_config(digits_dir)
    evaluator = linear_fewshot.FewshotEvaluator(model, data, "train[:200]", "test[:100]", (1, 2), 2)
    devices = jax.devices()
    if layout == "sharded":  # every array split (or replicated) over 8 devices, as fsdp/jit
        mesh = jax.sharding.Mesh(np.array(devices), ("data",))

        def place(x):
            split = x.shape and x.shape[0] % len(devices) == 0
            spec = jax.sharding.PartitionSpec("data" if split else None)
            return jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))
    else:  # a pmap layout's unreplicated copy lives on one device, not the default one
        def place(x):
            return jax.device_put(x, devices[-1])
    placed = jax.tree.map(place, params)
    assert evaluator(placed) == evaluator(params)


def test_a_workdir_resumes_with_other_fewshot_settings(digits_dir, tmp_path):
    from vit_jax.training import state

    config = tiny_digits_config(digits_dir)
    workdir = tmp_path / "wd"
    workdir.mkdir()
    (workdir / "config.json").write_text(config.to_json())
    changed = tiny_digits_config(digits_dir, **{"fewshot.every_steps": 5})
    state.CheckpointStore(str(workdir), changed).close()  # no ConfigMismatchError
    with pytest.raises(state.ConfigMismatchError):
        state.CheckpointStore(str(workdir), tiny_digits_config(digits_dir, seed=1))
