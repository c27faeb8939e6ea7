"""Shared test set-up: 8 fake CPU devices (multi-device tests), quiet TensorFlow."""

import os
import signal

# Must happen before jax initialises its backends (i.e. before any test imports jax).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """A tfds data_dir with the digits dataset prepared once for the whole session."""
    from vit_jax.data import dataset_info

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    dataset_info.get_dataset_info("digits", data_dir)
    return data_dir


@pytest.fixture
def sigint_reaches_children():
    """The subprocesses a test starts get SIGINT as from a terminal.

    A test runner started in the background of a script inherits SIGINT ignored, and an
    ignored signal stays ignored across exec; a handled one is reset to the default.
    (A `preexec_fn` would do it too, but forks this multithreaded process.)
    """
    before = signal.getsignal(signal.SIGINT)
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="session")
def jax_cache():
    """The session's XLA compilation cache (the root conftest.py), for test subprocesses.

    The training subprocesses of several files run the same programs (the digits config
    at 8x8 on 1 or 2 CPU devices): each compiles once per session, not once per process.
    """
    return os.environ["JAX_COMPILATION_CACHE_DIR"]


@pytest.fixture(scope="session")
def tiny_workdir(digits_dir, tmp_path_factory):
    """One finished run of `tiny_digits_config` (12 steps), trained once per session.

    Returns (config, workdir, the result of train_and_evaluate). Shared by several files:
    a test that changes files copies the workdir first.
    """
    from vit_jax.training import trainer

    workdir = str(tmp_path_factory.mktemp("tiny_run"))
    config = tiny_digits_config(digits_dir)
    return config, workdir, trainer.train_and_evaluate(config, workdir)


def tiny_digits_config(data_dir, **overrides):
    """The quick-start config shrunk to run a few steps in seconds."""
    from configs import digits

    config = digits.get_config()
    config.data_dir = data_dir
    config.image_size = 8
    config.batch_size = 32
    config.eval_batch_size = 64
    config.num_train_steps = 12
    config.warmup_steps = 2
    config.log_every_steps = 4
    config.eval_every_steps = 0
    config.checkpoint_every_steps = 4
    config.sync_every_steps = 4
    return apply_overrides(config, **overrides)


def apply_overrides(config, **overrides):
    """Sets config fields given by dotted names, e.g. **{"model.variant": "testing"}."""
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config


def assert_bit_identical(a, b) -> None:
    """Same keys, dtypes, shapes and bytes in two parameter trees."""
    import numpy as np

    from vit_core import npz

    fa, fb = npz.flatten(a), npz.flatten(b)
    assert sorted(fa) == sorted(fb)
    for key in fa:
        x, y = np.asarray(fa[key]), np.asarray(fb[key])
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert x.tobytes() == y.tobytes(), f"{key} differs (max |diff| {np.abs(x - y).max()})"
