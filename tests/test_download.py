"""vit_jax.weights.download against a real HTTP server on 127.0.0.1 (no mocks of the download).

The server (http.server in a thread, port 0) serves byte strings, answers Range
requests, and can be told to drop the connection mid-file, announce a wrong length,
send slowly or stall. Every test runs in a second or two.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vit_core.errors import DiskFullError, DownloadError
from vit_jax.weights import download

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(range(256)) * 1024  # 256 KiB, every byte position distinguishable
CHUNK = 16 * 1024


class Server(http.server.ThreadingHTTPServer):
    """Serves `files` (URL path -> bytes) and records what it was asked and sent."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files = files
        self.drop_at: int | None = None  # close the connection once at this byte offset
        self.stall_at: int | None = None  # stop sending (keep the socket open) at this offset
        self.extra_length = 0  # added to the announced size (Content-Length and -Range)
        self.delay = 0.0  # seconds between chunks
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.stop_stalling = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def handle_error(self, request, client_address) -> None:
        """A client that hung up mid-file (some tests' clients give up on purpose) is not
        an error of the server: no traceback from its thread in the test output."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        s = self.server
        header = self.headers.get("Range")
        s.requests.append((self.path, header))
        data = s.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        if match and not s.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data) + s.extra_length}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            size = len(data) + s.extra_length
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start + s.extra_length))
        self.end_headers()
        position = start
        while position < len(data):
            if s.drop_at is not None and position >= s.drop_at:
                s.drop_at = None  # once
                return  # the handler ends: the server closes the connection mid-file
            if s.stall_at is not None and position >= s.stall_at:
                s.stop_stalling.wait(10)
                return
            end = min(len(data), position + CHUNK)
            if s.drop_at is not None and position < s.drop_at < end:
                end = s.drop_at
            self.wfile.write(data[position:end])
            self.wfile.flush()
            position = end
            time.sleep(s.delay)


@pytest.fixture
def server():
    srv = Server({"/vit_models/x/model.npz": PAYLOAD, "/other.bin": b"abc"})
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.stop_stalling.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIT_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VIT_JAX_OFFLINE", raising=False)
    monkeypatch.delenv("VIT_JAX_BASE_URL", raising=False)
    return tmp_path / "cache"


GCS_URL = "https://storage.googleapis.com/vit_models/x/model.npz"


def _mirror(monkeypatch, server: Server) -> None:
    monkeypatch.setenv("VIT_JAX_BASE_URL", server.url("/"))


def test_download_through_a_mirror_into_the_cache_with_its_sha256(server, cache, monkeypatch,
                                                                   capfd):
    _mirror(monkeypatch, server)
    path = download.fetch(GCS_URL)
    assert path == str(cache / "vit_models" / "x" / "model.npz")  # the bucket path
    assert Path(path).read_bytes() == PAYLOAD
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    assert Path(path + ".sha256").read_text() == f"{digest}  model.npz\n"
    assert not os.path.exists(path + ".part")
    assert "256k/256k" in capfd.readouterr().err  # the progress bar: bytes of total
    # Later uses verify the file and do not ask the server again.
    assert download.fetch(GCS_URL) == path and len(server.requests) == 1


def test_a_dropped_connection_resumes_with_a_range_request(server, cache, monkeypatch, capfd):
    _mirror(monkeypatch, server)
    server.drop_at = 100_000
    path = download.fetch(GCS_URL)
    assert Path(path).read_bytes() == PAYLOAD
    assert server.requests == [("/vit_models/x/model.npz", None),
                               ("/vit_models/x/model.npz", "bytes=100000-")]
    assert "the connection dropped at 100000 of 262144 bytes" in capfd.readouterr().err


def test_an_interrupted_run_resumes_from_its_part_file(server, cache, monkeypatch):
    _mirror(monkeypatch, server)
    dest = cache / "vit_models" / "x" / "model.npz"
    dest.parent.mkdir(parents=True)
    Path(str(dest) + ".part").write_bytes(PAYLOAD[:5000])
    assert Path(download.fetch(GCS_URL)).read_bytes() == PAYLOAD
    assert server.requests == [("/vit_models/x/model.npz", "bytes=5000-")]
    # A complete part file (a crash before the rename) is finished by the 416 answer.
    dest.unlink()
    Path(str(dest) + ".sha256").unlink()
    Path(str(dest) + ".part").write_bytes(PAYLOAD)
    assert Path(download.fetch(GCS_URL)).read_bytes() == PAYLOAD
    # A server that ignores Range sends the whole file, which replaces the part.
    dest.unlink()
    Path(str(dest) + ".part").write_bytes(b"x" * 7000)
    server.ignore_range = True
    assert Path(download.fetch(GCS_URL)).read_bytes() == PAYLOAD


def test_404_is_one_line_naming_the_url_and_the_cache_path(server, cache, monkeypatch):
    _mirror(monkeypatch, server)
    url = "https://storage.googleapis.com/vit_models/x/missing.npz"
    with pytest.raises(DownloadError) as e:
        download.fetch(url)
    message = str(e.value)
    assert "\n" not in message
    assert message == (
        f"Cannot download {server.url('/vit_models/x/missing.npz')}: HTTP 404 Not Found "
        "(VIT_JAX_BASE_URL is set: does the mirror have it?); put the file at "
        f"{cache / 'vit_models' / 'x' / 'missing.npz'} by hand instead.")
    assert not list((cache / "vit_models" / "x").glob("missing.npz*[!k]"))  # only the .lock


def test_a_length_the_body_never_reaches_is_refused_and_kept_for_resume(server, cache,
                                                                        monkeypatch):
    _mirror(monkeypatch, server)
    server.extra_length = 10  # announces 10 bytes more than it sends
    with pytest.raises(DownloadError) as e:
        download.fetch(GCS_URL, retries=2)
    part = cache / "vit_models" / "x" / "model.npz.part"
    assert str(e.value) == (
        f"The download of {server.url('/vit_models/x/model.npz')} stopped at 262144 of "
        "262154 bytes (the server refuses the rest: HTTP 416 Requested Range Not "
        f"Satisfiable); rerun to resume (the partial file is kept at {part}).")
    assert not (cache / "vit_models" / "x" / "model.npz").exists()  # nothing short in place
    assert part.read_bytes() == PAYLOAD


def test_a_slow_server_completes_and_a_stalled_one_times_out(server, cache, monkeypatch):
    _mirror(monkeypatch, server)
    server.delay = 0.02  # 16 chunks: ~0.3 s, each read well inside the timeout
    start = time.monotonic()
    assert Path(download.fetch(GCS_URL, timeout=1.0)).read_bytes() == PAYLOAD
    assert time.monotonic() - start > 0.25
    server.delay, server.stall_at = 0.0, 3 * CHUNK
    server.files["/vit_models/x/stall.npz"] = PAYLOAD
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"stopped at 49152 of 262144 bytes \(no data for "
                                            r"the timeout\); rerun to resume"):
        download.fetch("https://storage.googleapis.com/vit_models/x/stall.npz", timeout=0.5)
    assert time.monotonic() - start < 5  # one resume that received nothing, then the error


def test_no_network_is_one_line_at_once_without_retries(cache, monkeypatch):
    # A port nobody listens on: the connection is refused, like a host without network.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("VIT_JAX_BASE_URL", f"http://127.0.0.1:{port}/")
    start = time.monotonic()
    with pytest.raises(DownloadError) as e:
        download.fetch(GCS_URL)
    assert time.monotonic() - start < 2
    dest = cache / "vit_models" / "x" / "model.npz"
    assert str(e.value) == (
        f"Cannot download http://127.0.0.1:{port}/vit_models/x/model.npz ([Errno 111] "
        f"Connection refused): download it elsewhere and put it at {dest}, or set "
        "VIT_JAX_BASE_URL to a mirror (VIT_JAX_OFFLINE=1 skips this attempt).")


def test_offline_never_connects_and_names_url_and_path(server, cache, monkeypatch):
    monkeypatch.setenv("VIT_JAX_OFFLINE", "1")
    with pytest.raises(DownloadError) as e:
        download.fetch(GCS_URL)
    dest = cache / "vit_models" / "x" / "model.npz"
    assert str(e.value) == (f"{dest} is not in the cache and VIT_JAX_OFFLINE is set: download "
                            f"{GCS_URL} and put it at {dest}.")
    # A file put there by hand is used offline, and its sha256 is recorded on first use.
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD)
    assert download.fetch(GCS_URL) == str(dest)
    assert Path(f"{dest}.sha256").read_text().startswith(hashlib.sha256(PAYLOAD).hexdigest())
    assert server.requests == []


def test_a_changed_file_fails_its_recorded_sha256(server, cache, monkeypatch):
    _mirror(monkeypatch, server)
    path = download.fetch(GCS_URL)
    with open(path, "r+b") as f:  # one flipped byte
        f.seek(1000)
        f.write(b"\xff")
    with pytest.raises(DownloadError) as e:
        download.fetch(GCS_URL)
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(f"{path} does not match the sha256 recorded when it was "
                                   f"downloaded ({path}.sha256: ")
    assert str(e.value).endswith("it changed or is damaged; delete it and its .sha256 and "
                                 "rerun to download it again.")


def test_two_threads_download_once_and_both_get_the_file(server, cache, monkeypatch):
    _mirror(monkeypatch, server)
    server.delay = 0.01
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(
        download.fetch(GCS_URL, progress=False))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 2 and results[0] == results[1]
    assert Path(results[0]).read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_two_processes_download_once_and_both_get_the_file(server, cache, monkeypatch):
    _mirror(monkeypatch, server)
    server.delay = 0.1  # 1.6 s: the second process starts while the first downloads
    code = ("from vit_jax.weights import download; "
            f"print(download.fetch({GCS_URL!r}, progress=False))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=30) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    dest = str(cache / "vit_models" / "x" / "model.npz")
    assert [o[0].strip() for o in outs] == [dest, dest]
    assert Path(dest).read_bytes() == PAYLOAD
    assert len(server.requests) == 1
    # The second says why it waits, in one line.
    assert sum(f"Waiting for another process that is downloading {dest} " in o[1]
               for o in outs) == 1


@pytest.fixture
def testing_release(server, monkeypatch):
    """A released name "imagenet21k/ViT-testing" whose tiny file the server holds."""
    import io

    import numpy as np

    from vit_core.params import official_shapes
    from vit_core.spec import ViTSpec
    from vit_jax.weights import pretrained

    spec = ViTSpec.from_variant("testing", num_classes=5, image_size=16, representation_size=16)
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: rng.normal(size=shape).astype(np.float32)
                        for k, shape in official_shapes(spec).items()})
    server.files["/vit_models/imagenet21k/ViT-testing.npz"] = buffer.getvalue()
    monkeypatch.setitem(pretrained.RELEASES, "imagenet21k/ViT-testing", pretrained.Release(
        GCS_URL.replace("x/model", "imagenet21k/ViT-testing"), spec))
    return "imagenet21k/ViT-testing"


def test_resolve_downloads_a_released_name_once_and_then_works_offline(
        server, cache, monkeypatch, testing_release):
    from vit_jax.weights import pretrained

    _mirror(monkeypatch, server)
    path, options = pretrained.resolve(testing_release)
    assert path == str(cache / "vit_models" / "imagenet21k" / "ViT-testing.npz")
    assert options == {"variant": "testing", "classifier": "token", "representation_size": 16}
    monkeypatch.setenv("VIT_JAX_OFFLINE", "1")
    assert pretrained.resolve(testing_release + ".npz")[0] == path  # from the cache
    assert len(server.requests) == 1


def test_predict_and_visualize_take_a_model_name(server, cache, monkeypatch, capsys,
                                                 testing_release):
    from vit_jax import cli, predict

    _mirror(monkeypatch, server)
    args = predict.parse_args(["--model", testing_release, "red.png"])
    assert cli.checkpoint_arg(args) == str(
        cache / "vit_models" / "imagenet21k" / "ViT-testing.npz")
    assert "Downloading http://127.0.0.1:" in capsys.readouterr().err
    assert cli.checkpoint_arg(predict.parse_args(["--checkpoint", "runs/x", "a.png"])) == \
        "runs/x"
    with pytest.raises(SystemExit):  # argparse: one of them, not both
        predict.parse_args(["--model", testing_release, "--checkpoint", "x", "y.png"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_analyze_and_fewshot_take_a_model_name(server, cache, monkeypatch, capsys, tmp_path,
                                               testing_release, digits_dir):
    """The released file is downloaded once and is the model both commands run."""
    from PIL import Image

    from vit_jax import analyze, fewshot

    _mirror(monkeypatch, server)
    image = tmp_path / "red.png"
    Image.new("RGB", (20, 20), (200, 30, 50)).save(image)
    analyze.main(["--model", testing_release, "--out", str(tmp_path / "figures"), str(image)])
    assert "wrote " in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "figures" / "analysis.json")
    fewshot.main(["--model", testing_release, "--dataset", "digits", "--data_dir", digits_dir,
                  "--shots", "1", "--seeds", "1"])
    assert "1-shot: top-1 " in capsys.readouterr().out
    assert [path for path, _ in server.requests] == ["/vit_models/imagenet21k/ViT-testing.npz"]
    with pytest.raises(SystemExit):  # one of --model and --checkpoint is needed
        fewshot.main(["--dataset", "digits"])
    assert "one of the arguments --checkpoint --model is required" in capsys.readouterr().err


def test_cli_without_network_is_one_line_with_url_and_cache_path(cache, tmp_path):
    with socket.socket() as s:  # a port nobody listens on: refused, as without network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VIT_JAX_CACHE": str(cache),
           "VIT_JAX_BASE_URL": f"http://127.0.0.1:{port}"}
    result = subprocess.run(
        [sys.executable, "-m", "vit_jax.evaluate", "--model", "i1k-s16-300ep"], env=env,
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    dest = cache / "big_vision" / "vit_s16_i1k_300ep.npz"
    assert result.stderr == (
        f"error: i1k-s16-300ep: Cannot download http://127.0.0.1:{port}/big_vision/"
        "vit_s16_i1k_300ep.npz ([Errno 111] Connection refused): download it elsewhere and put "
        f"it at {dest}, or set VIT_JAX_BASE_URL to a mirror (VIT_JAX_OFFLINE=1 skips this "
        "attempt).\n")


def test_a_full_disk_is_one_line(server, cache, monkeypatch):
    _mirror(monkeypatch, server)
    dest = cache / "vit_models" / "x" / "model.npz"
    dest.parent.mkdir(parents=True)
    os.symlink("/dev/full", f"{dest}.part")  # every write: ENOSPC
    with pytest.raises(DiskFullError, match=rf"^The disk of {dest}\.part is full \(\d+ bytes "
                       r"received of 262144\): free space and rerun to resume, or set "
                       r"VIT_JAX_CACHE to a disk with room\.$"):
        download.fetch(GCS_URL)
    assert not dest.exists()
