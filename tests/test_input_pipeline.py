"""vit_jax.data.input_pipeline and the digits dataset: splits, batches, determinism, errors.

Real data is scikit-learn's digits, built once into a temporary data_dir; ImageNet and
CIFAR-10 are checked under tfds.testing.mock_data (random images, nothing downloaded).
"""

import collections
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import default
from vit_core.errors import DatasetError
from vit_jax.data import dataset_info, digits, input_pipeline

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _default_config() -> ml_collections.ConfigDict:
    return default.get_config()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("tfds"))
    dataset_info.get_dataset_info("digits", path)  # builds digits once for this module
    return path


def _config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
    config = _default_config()
    config.data_dir = data_dir
    config.image_size = 16
    config.augment, config.flip, config.eval_resize_ratio = "pad_crop", False, 1.0
    config.update(overrides)
    return config


def _take(iterator, count: int) -> list[dict[str, np.ndarray]]:
    return [next(iterator) for _ in range(count)]


def _assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def _raw_split(data_dir: str, split: str) -> list[tuple[np.ndarray, int]]:
    """The stored (image, label) pairs of a split, in file order."""
    builder = tfds.builder("digits", data_dir=data_dir)
    ds = builder.as_dataset(split=split, shuffle_files=False)
    return [(ex["image"], int(ex["label"])) for ex in tfds.as_numpy(ds)]


def test_digits_splits_fixed_stratified_disjoint(data_dir):
    images, labels = digits.load_source()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
    assert images.max() == 255 and labels.max() == 9
    indices = digits.split_indices(labels)
    sizes = {name: len(idx) for name, idx in indices.items()}
    assert sizes == {"train": 1293, "validation": 144, "test": 360}
    every = np.concatenate(list(indices.values()))
    assert sorted(every) == list(range(1797))  # disjoint, and nothing lost
    class_counts = np.bincount(labels)
    for name, fraction in [("test", 0.2), ("validation", 0.08)]:
        counts = np.bincount(labels[indices[name]], minlength=10)
        assert np.all(np.abs(counts - fraction * class_counts) <= 1.5), (name, counts)
    info = dataset_info.get_dataset_info("digits", data_dir)
    assert info.num_examples == sizes
    assert (info.num_classes, info.image_channels) == (10, 1)
    assert info.class_names == [str(i) for i in range(10)]
    # The built test split holds exactly the source examples chosen for it.
    stored = sorted((img.tobytes(), lab) for img, lab in _raw_split(data_dir, "test"))
    chosen = sorted((images[i].tobytes(), int(labels[i])) for i in indices["test"])
    assert stored == chosen


@pytest.mark.parametrize(
    "augment, flip", [("pad_crop", False), ("inception_crop", True), ("none", False)]
)
def test_train_batches_shapes_and_augments(data_dir, augment, flip):
    config = _config(data_dir, augment=augment, flip=flip)
    a, b = _take(input_pipeline.create_train_iter(config, global_batch_size=8), 2)
    assert a.keys() == {"image", "label"}
    assert a["image"].shape == (8, 16, 16, 3) and a["image"].dtype == np.float32
    assert a["label"].shape == (8,) and a["label"].dtype == np.int32
    assert a["image"].min() >= -1.0 and a["image"].max() <= 1.0
    assert a["image"].min() == -1.0 and a["image"].max() > 0.5  # black background, ink
    assert not np.array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["image"][..., 0], a["image"][..., 2])  # gray → RGB
    if augment != "none":  # the augmentation changes the image of the same example
        plain = _config(data_dir, augment="none")
        c = next(input_pipeline.create_train_iter(plain, global_batch_size=8))
        np.testing.assert_array_equal(a["label"], c["label"])
        assert not np.array_equal(a["image"], c["image"])


def test_resume_is_exact_across_epochs(data_dir):
    # 200 per step on 1293 examples: steps 5..7 cross the end of the first epoch.
    config = _config(data_dir, augment="inception_crop", flip=True, shuffle_buffer=500)
    from_zero = _take(input_pipeline.create_train_iter(config, global_batch_size=200), 8)[5:]
    resumed = input_pipeline.create_train_iter(config, global_batch_size=200, start_step=5)
    _assert_batches_equal(from_zero, _take(resumed, 3))
    other_seed = next(
        input_pipeline.create_train_iter(_config(data_dir, seed=1), global_batch_size=8)
    )
    same_seed = next(input_pipeline.create_train_iter(_config(data_dir), global_batch_size=8))
    assert not np.array_equal(other_seed["image"], same_seed["image"])


def test_each_epoch_is_a_new_permutation(data_dir):
    config = _config(data_dir, augment="none")
    n = 1293  # = 3 * 431: an epoch is exactly 3 steps of 431
    epochs = _take(input_pipeline.create_train_iter(config, global_batch_size=431), 6)
    first = np.concatenate([b["image"] for b in epochs[:3]]).reshape(n, -1)
    second = np.concatenate([b["image"] for b in epochs[3:]]).reshape(n, -1)
    raw = _raw_split(data_dir, "train")
    assert collections.Counter(np.concatenate([b["label"] for b in epochs[:3]])) == (
        collections.Counter(label for _, label in raw)
    )
    assert not np.array_equal(first, second)  # reshuffled...
    np.testing.assert_array_equal(
        np.unique(first, axis=0), np.unique(second, axis=0)
    )  # ...same set


def test_processes_split_the_same_global_batch(data_dir):
    config = _config(data_dir, augment="inception_crop", flip=True)
    whole = _take(input_pipeline.create_train_iter(config, global_batch_size=12, start_step=3), 2)
    parts = [
        _take(
            input_pipeline.create_train_iter(
                config, global_batch_size=12, start_step=3, process_index=p, process_count=2
            ),
            2,
        )
        for p in range(2)
    ]
    for step in range(2):
        assert parts[0][step]["image"].shape == (6, 16, 16, 3)
        joined = {k: np.concatenate([parts[p][step][k] for p in range(2)]) for k in whole[step]}
        _assert_batches_equal([whole[step]], [joined])


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_covers_each_example_once_and_matches_preprocess(data_dir, process_count):
    config = _config(data_dir, image_size=20, eval_resize_ratio=0.875)
    kwargs = dict(global_batch_size=64, process_count=process_count)
    runs = [
        list(input_pipeline.create_eval_iter(config, "validation", process_index=p, **kwargs))
        for p in range(process_count)
    ]
    expected_batches = input_pipeline.num_eval_batches(config, "validation", global_batch_size=64)
    assert expected_batches == 3  # 144 = 64 + 64 + 16 (+ 48 padding)
    assert all(len(run) == expected_batches for run in runs)
    for batches in runs:
        for batch in batches:
            assert batch["image"].shape == (64 // process_count, 20, 20, 3)
            assert batch["mask"].dtype == np.float32
    # Global batch k = the rows of every process, in order; padding only at the very end.
    rows = {
        k: np.concatenate([run[i][k] for i in range(expected_batches) for run in runs])
        for k in ("image", "label", "mask")
    }
    np.testing.assert_array_equal(rows["mask"], [1.0] * 144 + [0.0] * 48)
    assert not rows["image"][144:].any() and not rows["label"][144:].any()
    raw = _raw_split(data_dir, "validation")
    expected = np.stack([input_pipeline.preprocess_for_eval(img, 20, 0.875) for img, _ in raw])
    np.testing.assert_array_equal(rows["image"][:144], expected)  # bit-identical transform
    np.testing.assert_array_equal(rows["label"][:144], [label for _, label in raw])


def test_preprocess_for_eval_channels_and_range():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((30, 40, 1), 7, np.uint8)], axis=-1)
    out = input_pipeline.preprocess_for_eval(rgb, 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    np.testing.assert_array_equal(input_pipeline.preprocess_for_eval(rgba, 24), out)
    gray = input_pipeline.preprocess_for_eval(rgb[..., 0], 24, resize_ratio=1.0)
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    flat = input_pipeline.preprocess_for_eval(np.full((8, 8), 255, np.uint8), 16, 1.0)
    np.testing.assert_array_equal(flat, np.ones((16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        input_pipeline.preprocess_for_eval(rgb.astype(np.float32), 24)


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(dataset_info.DatasetNotFoundError) as err:
        dataset_info.get_dataset_info("imagenet2012", missing)
    message = str(err.value)
    for part in [
        "'imagenet2012'",
        missing,
        f"`python -m vit_jax.prepare imagenet2012 --data_dir {missing}`",
        "ILSVRC2012_img_train.tar",
        "ILSVRC2012_img_val.tar",
        str(pathlib.Path(missing) / "downloads" / "manual"),
    ]:
        assert part in message
    assert len(message.splitlines()) == 1, message  # the CLIs print it as one "error:" line
    assert isinstance(err.value, DatasetError)
    config = _config(missing, dataset="cifar10")
    with pytest.raises(dataset_info.DatasetNotFoundError,
                       match=r"`python -m vit_jax\.prepare cifar10 --data_dir "):
        input_pipeline.create_train_iter(config, global_batch_size=8)
    with pytest.raises(dataset_info.DatasetNotFoundError, match="no_such_dataset"):
        dataset_info.get_dataset_info("no_such_dataset", missing)
    assert not (tmp_path / "nowhere" / "downloads" / "cifar10").exists()  # nothing fetched


@pytest.mark.parametrize(
    "name, close, command",
    [
        (
            "cifar_10",
            "did you mean 'cifar10', 'cifar100'",
            "`python -m vit_jax.prepare cifar10 --data_dir {dir}`",
        ),
        (
            "imagenet2012_typo/subset:1.0.0",
            "did you mean 'imagenet2012', ",
            "`python -m vit_jax.prepare imagenet2012 --data_dir {dir}`",
        ),
        (
            "digit",
            "did you mean 'digits'?",
            "'digits' is bundled: vit-jax prepares it on first use.",
        ),
        (
            "zzqqxx_no_such_thing",
            "no known name is close.",
            "`python -m vit_jax.prepare NAME --data_dir {dir}`",
        ),
    ],
)
def test_unknown_dataset_is_a_short_error_with_close_names(tmp_path, name, close, command):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(dataset_info.DatasetNotFoundError) as err:
        dataset_info.get_dataset_info(name, missing)
    message = str(err.value)
    assert message.startswith(f"Unknown tfds dataset {name!r} (data_dir searched: {missing!r}); ")
    assert close in message and command.format(dir=missing) in message, message
    # One line, not tfds' catalogue of ~450 names (nor a cause that holds it).
    assert len(message.splitlines()) == 1 and len(message.replace(missing, "")) < 350, message
    assert "abstract_reasoning" not in message and err.value.__cause__ is None


def test_bad_arguments_are_clear(data_dir):
    config = _config(data_dir)
    with pytest.raises(ValueError, match="multiple of process_count"):
        input_pipeline.create_train_iter(config, global_batch_size=9, process_count=2)
    with pytest.raises(ValueError, match="process_index"):
        input_pipeline.create_eval_iter(config, "test", global_batch_size=8, process_index=1)
    with pytest.raises(ValueError, match="augment"):
        input_pipeline.create_train_iter(_config(data_dir, augment="mixup"), global_batch_size=8)


@pytest.mark.parametrize("dataset, num_classes", [("imagenet2012", 1000), ("cifar10", 10)])
def test_mocked_tfds_datasets(tmp_path, dataset, num_classes):
    config = _config(
        str(tmp_path), dataset=dataset, image_size=32, augment="inception_crop", flip=True
    )
    config.eval_resize_ratio = 0.875
    with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
        info = dataset_info.get_dataset_info(dataset, str(tmp_path))
        assert info.num_classes == num_classes and info.image_channels == 3
        train = _take(input_pipeline.create_train_iter(config, global_batch_size=4), 3)
        evals = list(input_pipeline.create_eval_iter(config, "test", global_batch_size=4))
    for batch in train:
        assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
        assert batch["label"].max() < num_classes
        assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
    assert len(evals) == 3  # 10 examples = 4 + 4 + 2 (+ 2 padding)
    np.testing.assert_array_equal(np.concatenate([b["mask"] for b in evals]), [1] * 10 + [0] * 2)


def test_import_registers_digits_without_importing_tensorflow():
    code = (
        "import sys, tensorflow_datasets as tfds, vit_jax.data.input_pipeline\n"
        "assert tfds.builder_cls('digits').name == 'digits'\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
