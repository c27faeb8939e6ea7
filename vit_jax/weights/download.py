"""Files fetched once into a local cache: released weights by URL, resumed, locked, verified.

`fetch(url)` returns the local path of `url`'s file in the cache, downloading it first
when it is not there:

  * cache: `$VIT_JAX_CACHE` (default `~/.cache/vit_jax`); a URL under
    https://storage.googleapis.com/ lives at its bucket path, e.g.
    `~/.cache/vit_jax/vit_models/imagenet21k/ViT-B_16.npz`, so a mirror or a hand copy
    is the same tree;
  * mirror: `$VIT_JAX_BASE_URL` replaces "https://storage.googleapis.com/" in the URL
    (e.g. "http://mirror.local/gcs/"); the cache path stays the same;
  * offline: `VIT_JAX_OFFLINE=1` never opens a connection; a missing file (or a host
    that cannot be reached) is one `DownloadError` line naming the URL and the cache path
    to put the file at, at once: no retries when nothing was received;
  * resume: bytes go to `FILE.part`; a dropped connection or an interrupted run resumes
    from its size with an HTTP Range request (a server that ignores Range starts over);
  * size: the file must have the length the server announced (Content-Length, or
    Content-Range's total on a resumed request);
  * atomic: `FILE.part` is renamed to `FILE` only when complete, so `FILE` is never partial;
  * sha256: recorded at download in `FILE.sha256` (`sha256sum` format) and checked on
    every later use; a file put there by hand gets its sha256 recorded on first use;
  * lock: `FILE.lock` (an fcntl lock, which Linux honours across the hosts of a shared
    NFS disk too) plus a per-path thread lock, so concurrent processes or threads
    download once and the others wait and then use that file;
  * progress: a tqdm bar on stderr (bytes, rate, ETA).

Plain `urllib` (stdlib): the job is one GET with a Range header and a loop over the
body, and urllib reports a refused connection or an unknown host at once, without the
retry warnings `requests`/`urllib3` adapters print (vit-jax does not declare those
libraries either). `tqdm` (already a dependency of tensorflow-datasets and
huggingface_hub) draws the progress bar. No JAX, no torch: this module is only files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import http.client
import os
import re
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import tqdm

from vit_core.errors import DiskFullError, DownloadError

DEFAULT_BASE_URL = "https://storage.googleapis.com/"
DEFAULT_TIMEOUT_S = 10.0  # a connect or a read that waits longer than this failed
DEFAULT_RETRIES = 3  # resumes after a connection that dropped mid-file having sent bytes
CHUNK_BYTES = 1 << 20
_USER_AGENT = "vit-jax"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIABLE_RANGE = re.compile(r"bytes\s+\*/(\d+)")

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def cache_dir() -> str:
    """The cache directory: `$VIT_JAX_CACHE`, else `~/.cache/vit_jax`."""
    return os.path.abspath(os.path.expanduser(
        os.environ.get("VIT_JAX_CACHE") or os.path.join("~", ".cache", "vit_jax")))


def is_offline() -> bool:
    """Whether `VIT_JAX_OFFLINE` forbids downloads ("1", "true", "yes", "on")."""
    return os.environ.get("VIT_JAX_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def mirrored(url: str) -> str:
    """`url` with "https://storage.googleapis.com/" replaced by `$VIT_JAX_BASE_URL`."""
    base = os.environ.get("VIT_JAX_BASE_URL")
    if base and url.startswith(DEFAULT_BASE_URL):
        return base.rstrip("/") + "/" + url.removeprefix(DEFAULT_BASE_URL)
    return url


def cache_path(url: str) -> str:
    """Where `url`'s file lives in the cache (its bucket path for Google Cloud Storage).

    Args:
      url: an http(s) URL of the original (not mirrored) location.

    Returns:
      An absolute path under `cache_dir()`.
    """
    if url.startswith(DEFAULT_BASE_URL):
        relative = url.removeprefix(DEFAULT_BASE_URL)
    else:  # another server: keep hosts apart
        relative = os.path.join("urls", re.sub(r"^[a-z]+://", "", url))
    parts = [p for p in relative.split("/") if p not in ("", ".", "..")]
    return os.path.join(cache_dir(), *parts)


def sha256_of(path: str) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks (about 1 s per GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _write_sha256(path: str, digest: str) -> None:
    tmp = f"{path}.sha256.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{digest}  {os.path.basename(path)}\n")  # `sha256sum -c` reads this
    os.replace(tmp, path + ".sha256")


def verify(path: str) -> None:
    """Checks a cached file against its recorded sha256, recording it when there is none.

    Args:
      path: a file in the cache.

    Raises:
      DownloadError: the file's sha256 differs from the one recorded beside it.
    """
    record = path + ".sha256"
    actual = sha256_of(path)
    if not os.path.exists(record):  # put there by hand (or by a run that crashed between)
        with contextlib.suppress(OSError):  # a read-only shared cache: verify nothing more
            _write_sha256(path, actual)
        return
    with open(record) as f:
        expected = f.read().split(maxsplit=1)[0] if os.path.getsize(record) else ""
    if actual != expected:
        raise DownloadError(
            f"{path} does not match the sha256 recorded when it was downloaded ({record}: "
            f"{expected[:12]}…, the file: {actual[:12]}…): it changed or is damaged; delete it "
            "and its .sha256 and rerun to download it again.")


def fetch(url: str, dest: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
          retries: int = DEFAULT_RETRIES, progress: bool = True) -> str:
    """The local copy of `url`, downloaded into the cache on first use.

    Args:
      url: the file's original URL (`$VIT_JAX_BASE_URL` is applied when downloading).
      dest: where to keep it; default `cache_path(url)`.
      timeout: seconds a connect or a read may wait before the attempt fails.
      retries: resumes after a connection that dropped having sent bytes.
      progress: draw a progress bar on stderr.

    Returns:
      The path of the complete, verified file.

    Raises:
      DownloadError: offline, no network, an HTTP error, a transfer that keeps stopping
        short of the announced size, or a cached file whose sha256 changed. The message
        is one line with the URL and the path to put the file at.
    """
    dest = os.path.abspath(dest or cache_path(url))
    if os.path.isfile(dest):
        verify(dest)
        return dest
    if is_offline():
        raise DownloadError(
            f"{dest} is not in the cache and VIT_JAX_OFFLINE is set: download {mirrored(url)} "
            f"and put it at {dest}.")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with _locked(dest):
        if os.path.isfile(dest):  # another process or thread downloaded it while we waited
            verify(dest)
            return dest
        _download(mirrored(url), dest, timeout=timeout, retries=retries, progress=progress)
        digest = sha256_of(dest + ".part")
        _write_sha256(dest, digest)  # first: `dest` never exists without its record
        os.replace(dest + ".part", dest)
    return dest


@contextlib.contextmanager
def _locked(dest: str) -> Iterator[None]:
    """Holds `dest`'s thread lock and its `.lock` file lock; says so when it has to wait."""
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(dest, threading.Lock())
    with thread_lock:
        fd = os.open(dest + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                print(f"Waiting for another process that is downloading {dest} "
                      f"(lock: {dest}.lock).", file=sys.stderr, flush=True)
                fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock; the lock file stays (removing it would race)


def _unreachable(url: str, dest: str, reason: object) -> DownloadError:
    return DownloadError(
        f"Cannot download {url} ({reason}): download it elsewhere and put it at {dest}, or set "
        "VIT_JAX_BASE_URL to a mirror (VIT_JAX_OFFLINE=1 skips this attempt).")


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


def _download(url: str, dest: str, *, timeout: float, retries: int, progress: bool) -> None:
    """Brings `dest + ".part"` to the full file, resuming and retrying as `fetch` says."""
    part = dest + ".part"
    bar = None  # drawn once the first answer says how large the file is
    attempt = 0
    try:
        while True:
            offset = _size(part)
            request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
            if offset:
                request.add_header("Range", f"bytes={offset}-")
            try:
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as e:
                total = _unsatisfiable_total(e) if offset else None
                if total == offset:  # a crash after the last byte, before the rename
                    return
                if total is not None and attempt < retries:
                    attempt += 1
                    if total < offset:  # a part longer than the file: start over
                        os.remove(part)
                        continue
                if total is not None:
                    raise _stopped(url, part, offset, total, "the server refuses the rest: "
                                   f"HTTP {e.code} {e.reason}") from None
                mirror = " (VIT_JAX_BASE_URL is set: does the mirror have it?)" \
                    if os.environ.get("VIT_JAX_BASE_URL") else ""
                raise DownloadError(f"Cannot download {url}: HTTP {e.code} {e.reason}{mirror}; "
                                    f"put the file at {dest} by hand instead.") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", e)
                if attempt:  # it was reachable a moment ago: keep the part for a rerun
                    raise _stopped(url, part, offset, None, reason) from None
                raise _unreachable(url, dest, reason) from None
            with response:
                total, offset = _expected_total(response, offset)
                if bar is None:  # said once the server answered: a failed connect is one line
                    print(f"Downloading {url} to {dest}", file=sys.stderr, flush=True)
                    bar = tqdm.tqdm(desc=os.path.basename(dest), total=total, unit="B",
                                    unit_scale=True, unit_divisor=1024, file=sys.stderr,
                                    disable=not progress,
                                    mininterval=0.5 if sys.stderr.isatty() else 10.0)
                received, failure = _copy(response, part, offset, bar, total)
            size = _size(part)
            if (total is None and failure is None) or size == total:
                return
            attempt += 1
            if received == 0 or attempt > retries:
                raise _stopped(url, part, size, total, failure or "the connection closed early")
            bar.write(f"{os.path.basename(dest)}: the connection dropped at {size} of "
                      f"{total} bytes ({failure or 'closed early'}); resuming.", file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()


def _unsatisfiable_total(e: urllib.error.HTTPError) -> int | None:
    """The file size a 416 (Range Not Satisfiable) answer states, else None."""
    if e.code != 416 or e.headers is None:
        return None
    match = _UNSATISFIABLE_RANGE.match(e.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _expected_total(response: http.client.HTTPResponse, offset: int) -> tuple[int | None, int]:
    """(the file's full size if the server says it, the offset this response starts at)."""
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == offset:
            total = match.group(3)
            return (int(total) if total != "*" else None), offset
        raise DownloadError(f"{response.url} answered a resume at byte {offset} with "
                            f"Content-Range {response.headers.get('Content-Range')!r}.")
    length = response.headers.get("Content-Length")  # a 200: the whole file from byte 0
    return (int(length) if length and length.isdigit() else None), 0


def _copy(response: http.client.HTTPResponse, part: str, offset: int, bar: tqdm.tqdm,
          total: int | None) -> tuple[int, str | None]:
    """Appends the body to `part` from `offset`; (bytes received, why it stopped early).

    Raises:
      DiskFullError: the disk of `part` filled up (the part is kept for a resume).
    """
    if bar.total != total:
        bar.reset(total=total)
    if offset or bar.n:
        bar.n = offset  # a resume starts the bar where the part ends
        bar.refresh()
    received = 0
    try:
        with open(part, "r+b" if offset else "wb") as f:
            if offset:  # a 206 appends at exactly `offset` ("wb" already starts a 200 at 0)
                f.truncate(offset)
                f.seek(offset)
            while True:
                try:
                    chunk = response.read1(CHUNK_BYTES)  # what has arrived, up to 1 MiB
                except TimeoutError:
                    return received, "no data for the timeout"
                except (OSError, http.client.HTTPException) as e:
                    return received, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                if not chunk:
                    return received, None
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except OSError as e:  # from writing: the reads' errors are handled above
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFullError(
            f"The disk of {part} is full ({offset + received} bytes received"
            f"{f' of {total}' if total else ''}): free space and rerun to resume, or set "
            "VIT_JAX_CACHE to a disk with room.") from None


def _stopped(url: str, part: str, size: int, total: int | None, reason: object
             ) -> DownloadError:
    of = f" of {total}" if total is not None else ""
    return DownloadError(
        f"The download of {url} stopped at {size}{of} bytes ({reason}); rerun to resume "
        f"(the partial file is kept at {part}).")

