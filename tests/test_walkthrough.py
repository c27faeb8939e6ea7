"""The README's "Fine-tune a released ViT on your images", run as written.

The section's code blocks are taken from README.md and run unchanged: the variables of its
first block (`export DATA=... RUN=... IMAGE=...`) are set in the environment instead, to a
generated PNG folder and temporary paths; the shell blocks run in bash from the repository
root, the Python block in this process. The released name's file comes from a mirror on
127.0.0.1 (`VIT_JAX_BASE_URL`: a directory laid out like the bucket, served by
`http.server`) that holds a random-weight `.npz` of the release's shapes; the download
cache is temporary (`VIT_JAX_CACHE`). Training gets a real SIGINT, to its whole process
group as a terminal's Ctrl-C, once it has saved a checkpoint; the same command then
resumes and finishes. The logits the Python block computes in timm and transformers are
compared with vit_jax's on the same input.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shlex
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
from _train_subprocess import REPO, subprocess_env
from PIL import Image

RELEASE = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
SECTION = "### Fine-tune a released ViT on your images"
CLASSES = {"daisy": (230, 220, 60), "rose": (200, 30, 50), "tulip": (150, 60, 200)}
TIMEOUT = 600  # seconds per command; then the process group is SIGKILLed
pytestmark = pytest.mark.usefixtures("sigint_reaches_children")  # Ctrl-C as a terminal's


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the walkthrough section."""
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    assert readme.count(SECTION) == 1
    section = readme.split(SECTION, 1)[1]
    section = re.split(r"^#{2,4} ", section, maxsplit=1, flags=re.M)[0]  # up to the next heading
    return re.findall(r"^```(\w*)\n(.*?)^```$", section, flags=re.M | re.S)


def _variables(block: str) -> list[str]:
    """The names the first block exports; it must do nothing else."""
    words = shlex.split(block)
    assert words[0] == "export" and all(re.fullmatch(r"[A-Z]+=\S+", w) for w in words[1:]), block
    return [w.split("=")[0] for w in words[1:]]


class Mirror(http.server.ThreadingHTTPServer):
    """Serves `root` (a copy of the bucket's tree) on 127.0.0.1; records the paths asked."""

    daemon_threads = True

    def __init__(self, root: str) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                server.requests.append(self.path)

        super().__init__(("127.0.0.1", 0), functools.partial(Handler, directory=root))


@pytest.fixture
def mirror(tmp_path):
    """A mirror holding a random-weight file of the release's shapes at its bucket path."""
    import jax

    from vit_jax.model import vit as models
    from vit_jax.weights import checkpoint, pretrained

    release = pretrained.RELEASES[RELEASE]
    shapes = models.param_shapes(models.VisionTransformer(release.spec))  # no compile
    rng = np.random.default_rng(0)

    def random(path, leaf: jax.ShapeDtypeStruct) -> np.ndarray:  # LayerNorm scales 1
        if jax.tree_util.keystr(path).endswith("['scale']"):
            return np.ones(leaf.shape, np.float32)
        return rng.normal(0, 0.02, leaf.shape).astype(np.float32)

    path = tmp_path / "bucket" / "vit_models" / release.bucket_path
    os.makedirs(path.parent)
    checkpoint.save_npz(path, jax.tree_util.tree_map_with_path(random, shapes))
    server = Mirror(str(tmp_path / "bucket"))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/", release
    server.shutdown()
    server.server_close()


def _folder(root) -> None:
    """3 classes of coloured-noise PNGs: 8 each in train/, 2 each in test/."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 2)):
        for name, colour in CLASSES.items():
            os.makedirs(root / split / name)
            for i in range(count):
                size = rng.integers(40, 90, 2)  # any size, as a user's photos
                pixels = np.clip(np.array(colour) + rng.integers(-40, 40, (*size, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")


class Shell:
    """One `bash -c BLOCK` in its own process group (as a terminal's foreground job).

    Output goes to `log`; at `TIMEOUT` the whole group is SIGKILLed (a hung JAX process
    ignores SIGTERM).
    """

    def __init__(self, block: str, env: dict[str, str], log) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(["bash", "-euc", block], cwd=REPO, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.deadline = time.monotonic() + TIMEOUT

    def __enter__(self) -> Shell:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=max(self.deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"timed out:\n{self.output()[-4000:]}") from None

    def wait_until(self, condition, what: str) -> None:
        while not condition():
            assert self.proc.poll() is None, f"exited before {what}:\n{self.output()[-4000:]}"
            if time.monotonic() > self.deadline:
                os.killpg(self.proc.pid, signal.SIGKILL)
                raise AssertionError(f"timed out waiting for {what}:\n{self.output()[-4000:]}")
            time.sleep(0.02)

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: the whole job


def _steps_saved(workdir: str) -> list[int]:
    """Finished orbax checkpoints (their directories are renamed into place when done)."""
    try:
        names = os.listdir(os.path.join(workdir, "checkpoints"))
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(mirror, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    from vit_jax.weights import loading

    server, base_url, release = mirror
    blocks = readme_blocks()
    assert [lang for lang, _ in blocks] == ["bash", "bash", "bash", "python"], blocks
    (_, variables), (_, train), (_, use), (_, load) = blocks
    assert _variables(variables) == ["DATA", "RUN", "IMAGE"]
    assert RELEASE in train and "$DATA" in train and "$RUN" in train

    _folder(tmp_path / "flowers")
    run = str(tmp_path / "runs" / "flowers")
    paths = {"DATA": str(tmp_path / "flowers"), "RUN": run,
             "IMAGE": str(tmp_path / "flowers" / "test" / "rose" / "0.png")}
    env = subprocess_env(1, str(tmp_path / "jax_cache"), **paths, VIT_JAX_BASE_URL=base_url,
                         VIT_JAX_CACHE=str(tmp_path / "cache"), PYTHONPATH=REPO)

    # Train; Ctrl-C once a checkpoint is saved; the same command again resumes and finishes.
    started = time.monotonic()
    with Shell(train, env, tmp_path / "train.log") as job:
        job.wait_until(lambda: _steps_saved(run), "a checkpoint")
        job.ctrl_c()
        assert job.wait() == 130, job.output()[-4000:]
    first = time.monotonic() - started
    output = job.output()
    assert "Traceback" not in output, output[-4000:]
    stopped = re.findall(r"Interrupted \(Ctrl-C\) at step (\d+): checkpoint saved", output)
    assert len(stopped) == 1, output[-4000:]
    stopped = int(stopped[0])
    assert stopped < 200 and stopped in _steps_saved(run), output[-4000:]
    with Shell(train, env, tmp_path / "again.log") as job:
        assert job.wait() == 0, job.output()[-4000:]
    second = time.monotonic() - started - first
    output = job.output()
    assert f"Resuming from the checkpoint at step {stopped} " in output, output[-4000:]
    assert _steps_saved(run)[-1] == 200, output[-4000:]
    assert server.requests == ["/vit_models/" + release.bucket_path]  # downloaded once
    print(f"train until Ctrl-C {first:.0f} s (step {stopped}), resumed run {second:.0f} s")

    # Predict and export.
    started = time.monotonic()
    with Shell(use, env, tmp_path / "use.log") as job:
        assert job.wait() == 0, job.output()[-4000:]
    print(f"predict and 3 exports {time.monotonic() - started:.0f} s")
    output = job.output()
    [line] = [x for x in output.splitlines() if x.startswith(paths["IMAGE"] + ": ")]
    assert sorted(re.findall(r"(\w+) \(\d\.\d{4}\)", line)) == sorted(CLASSES), line
    assert "strict=True" in output and f"{run}-hf" in output, output
    assert os.path.isfile(f"{run}.npz") and os.path.isfile(f"{run}.safetensors")

    # Load in timm and transformers: the same logits as vit_jax's on the same input.
    for name, value in paths.items():
        monkeypatch.setenv(name, value)
    namespace: dict = {}
    started = time.monotonic()
    exec(compile(load, "README.md (walkthrough)", "exec"), namespace)
    print(f"timm and transformers block {time.monotonic() - started:.0f} s")
    x = namespace["x"]  # (1, 3, 64, 64)
    assert tuple(x.shape) == (1, 3, 64, 64)
    images = x.numpy().transpose(0, 2, 3, 1)  # (1, 64, 64, 3)
    want = loading.predict_logits(loading.load_model(f"{run}.npz"), images)  # (1, 3)
    np.testing.assert_array_equal(
        want, loading.predict_logits(loading.load_model(run), images))
    assert np.ptp(want) > 1e-3  # a trained head: the comparison can fail
    assert isinstance(namespace["timm_logits"], torch.Tensor)
    np.testing.assert_allclose(namespace["timm_logits"].numpy(), want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(namespace["hf_logits"].numpy(), want, atol=1e-4, rtol=1e-4)
    assert namespace["hf"].config.id2label == dict(enumerate(sorted(CLASSES)))
