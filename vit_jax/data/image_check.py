"""Image files a user hands over, decoded in full before anything relies on them.

An image folder (`folder:PATH`) is checked when it is opened (`python -m vit_jax.prepare
folder:PATH`, and again at the start of every run on it): every file of the class folders
is decoded completely, so that a broken file stops the run at once with its name instead
of failing mid-training inside TensorFlow. `decode` is the same bounded decoder for the
single images of predict and visualize.

What the training pipeline (tfds' ImageFolder + `tf.image.decode_image(channels=3)`)
does with each kind of file, and so what the check decides:
  * .jpg/.jpeg/.png (any case) are the files training reads; the content decides the
    format, not the name, so a PNG named .jpg is decoded as a PNG: accepted.
  * Grayscale, grayscale + alpha, RGBA, palette, 16-bit PNG and CMYK JPEG: TensorFlow
    decodes them to 8-bit RGB (alpha dropped, 16 bits scaled): accepted.
  * Truncated or corrupt JPEG/PNG (a bad CRC, a cut-off or corrupt end chunk), and
    zero-byte files: TensorFlow fails on them mid-run: refused.
  * GIF (animated or not), BMP, WebP, ... content under a .jpg/.png name: refused. GIF
    decodes to a stack of frames the pipeline cannot use; TensorFlow would read a BMP,
    but a folder's images are JPEG or PNG, and a BMP under a .jpg name is a mistake.
  * Images with more than MAX_PIXELS pixels (Pillow's decompression-bomb limit, ~89.5 M,
    e.g. a header declaring 100000×100000): refused before decoding, in bounded memory.
  * Other files in class folders: an image in another format (.gif, .bmp, .webp, .tif,
    ...: training would skip it, silently changing the data) is refused; any other file
    (.txt, .csv, a subfolder) is named in one warning line, since training skips it.
    Hidden files (.DS_Store) are ignored, as tfds does.
Pillow decodes for the check (TensorFlow is not needed to run it). Its verdict matched
`tf.image.decode_image`'s on all of 2,400 random corruptions (bit flips, cuts, insertions;
300 of each of 4 images, 2 seeds: a JPEG, a progressive JPEG, an RGB and a grayscale PNG)
once the PNG end chunk's CRC is checked too (Pillow's `verify` stops before it);
tests/test_image_check.py repeats a smaller draw. If a file still fails in TensorFlow
mid-run (changed after the check), `name_decode_errors` turns the error into one line
naming it.

The check runs in daemon threads (Pillow decodes outside the GIL; a Ctrl-C exits at once)
and draws a progress line on stderr (files, rate, ETA). Verdicts are remembered per file,
keyed by (path, size, mtime), in `$VIT_JAX_CACHE/image_check/` (default
`~/.cache/vit_jax/image_check/`), one file per folder, never in the data folder itself; a
re-check decodes only new or changed files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from PIL import Image

from vit_core.errors import DatasetError, ImageError
from vit_core.npz import atomic_write

FORMATS = ("JPEG", "PNG")  # what the training pipeline reads from a folder
EXTENSIONS = (".jpg", ".jpeg", ".png")  # the files tfds' ImageFolder lists (any case)
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb limit (89,478,485)
_CACHE_VERSION = 1  # bump when a verdict could change for the same file
_LISTED = 5  # bad files named in an error line; the rest are counted
# Threads, each holding at most one decoded image (≤ MAX_PIXELS × 4 bytes ≈ 360 MB).
_WORKERS = min(8, os.cpu_count() or 1)
PROGRESS_AFTER_S = 1.0  # a check quicker than this draws no progress line
PROGRESS_EVERY_S = 10.0  # between progress lines in a log (a terminal's: 0.5 s, in place)


@contextlib.contextmanager
def _bombs_refused() -> Iterator[None]:
    """Pillow only warns between MAX_PIXELS and twice that: make it refuse.

    `warnings` filters are process-wide: set once by the thread that starts the work
    (never from pool threads, which would race restoring them).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _png_end_ok(path: str) -> bool:
    """Walks the PNG chunks (seeks only) to IEND, whose CRC libpng needs right."""
    with open(path, "rb") as f:
        f.seek(8)  # the signature
        while True:
            head = f.read(8)
            if len(head) < 8:
                return False
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"IEND":  # Pillow's verify stops before its CRC; libpng checks it
                data = f.read(min(length, 1 << 16))
                crc = f.read(4)
                return (len(data) == length and len(crc) == 4
                        and zlib.crc32(kind + data) == int.from_bytes(crc, "big"))
            f.seek(length + 4, os.SEEK_CUR)  # data and CRC (Pillow's verify checks CRCs)


def _open(path: str, formats: Sequence[str] | None) -> Image.Image:
    """The image fully decoded, or an exception saying why not (needs `_bombs_refused`)."""
    with Image.open(path) as image:  # reads the header only
        if formats is not None and image.format not in formats:
            raise ValueError(f"a {image.format} image, not {' or '.join(formats)}")
        kind = image.format
        image.verify()  # PNG: every chunk's CRC; the image cannot be decoded after this
    if kind == "PNG" and not _png_end_ok(path):
        raise ValueError("its PNG end chunk (IEND) is missing or corrupt")
    with Image.open(path) as image:
        image.load()  # decodes every pixel: truncated data fails here
        return image


def _decoded(path: str, formats: Sequence[str] | None) -> tuple[Image.Image | None, str | None]:
    """(the image, None) if `path` decodes fully, else (None, the reason in a few words)."""
    try:
        return _open(path, formats), None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        return None, f"too large to decode safely: {e}"
    except FileNotFoundError:
        return None, "no such file"
    except Exception as e:
        # Pillow's parsers raise many kinds (OSError, SyntaxError, struct.error,
        # IndexError, ...) on hostile bytes: any of them means TensorFlow cannot use the
        # file either.
        return None, str(e).splitlines()[0] if str(e) else type(e).__name__


def _why_not(path: str) -> str | None:
    """The folder check of one file (in a pool thread): the decoded pixels are dropped."""
    return _decoded(path, FORMATS)[1]


def decode(path: str, formats: Sequence[str] | None = None) -> Image.Image:
    """Reads an image file completely, refusing decompression bombs.

    Args:
      path: an image file (untrusted).
      formats: Pillow format names to accept (e.g. FORMATS); None: any Pillow reads.

    Returns:
      The decoded image (pixels in memory, file closed).

    Raises:
      ImageError: no such file, not an image, broken, too large, or not in `formats`.
    """
    if not os.path.isfile(path):
        raise ImageError(f"No image file at {path}.")
    with _bombs_refused():
        image, why = _decoded(path, formats)
    if image is None:
        raise ImageError(f"Cannot read {path} as an image: {why}")
    return image


# ----------------------------------------------------------------------- the folder check
def _cache_paths(root: str) -> list[str]:
    """Where verdicts are kept: under the user's cache directory, never in the data folder
    (a check writes nothing there: `prepare` says so, and the folder may be read-only or
    shared)."""
    base = os.environ.get("VIT_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vit_jax")
    digest = hashlib.sha256(root.encode()).hexdigest()[:16]
    return [os.path.join(base, "image_check", f"{digest}.json")]


def _load_cache(root: str) -> dict[str, list[Any]]:
    for path in _cache_paths(root):
        try:
            with open(path) as f:
                data = json.load(f)
            if data.get("version") == _CACHE_VERSION and data.get("max_pixels") == MAX_PIXELS:
                return data["files"]
        except (OSError, ValueError, AttributeError, KeyError):  # absent or unreadable: none
            continue
    return {}


def _save_cache(root: str, files: dict[str, list[Any]]) -> None:
    text = json.dumps({"version": _CACHE_VERSION, "max_pixels": MAX_PIXELS, "files": files})
    for path in _cache_paths(root):
        try:
            atomic_write(path, lambda f: f.write(text.encode()))
            return
        except OSError:  # read-only folder: the next place; nowhere: no cache, still checked
            continue


def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


class _Progress:
    """'checking images: 1200/5000 files, 310 files/s, ETA 12 s' on stderr.

    On a terminal the line is redrawn in place (twice a second); in a log, one line every
    PROGRESS_EVERY_S. Nothing is drawn for a check quicker than PROGRESS_AFTER_S.
    """

    def __init__(self, total: int) -> None:
        self.total, self.start = total, time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last = self.start
        self.drawn = False

    def update(self, done: int) -> None:
        now = time.monotonic()
        every = 0.5 if self.tty else PROGRESS_EVERY_S
        if now - self.start < PROGRESS_AFTER_S or now - self.last < every:
            return
        self.last = now
        rate = done / (now - self.start)
        eta = (self.total - done) / rate if rate else float("inf")
        line = (f"checking images: {done}/{self.total} files, {rate:.0f} files/s, "
                f"ETA {eta:.0f} s")
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)
        self.drawn = True

    def close(self) -> float:
        if self.drawn and self.tty:
            print(file=sys.stderr, flush=True)
        return time.monotonic() - self.start


def _parallel_map(fn: Callable[[str], str], items: Sequence[str], workers: int
                  ) -> Iterator[str]:
    """`fn` over `items` in daemon threads, results in order.

    Daemon threads, not a ThreadPoolExecutor: after a Ctrl-C the process must exit at once,
    and the executor's threads are joined at exit, which waits for every decode in flight
    (forever, for a file that never ends, such as a named pipe).
    """
    jobs: queue.Queue = queue.Queue()
    for item in enumerate(items):
        jobs.put(item)
    results: dict[int, tuple[str | None, BaseException | None]] = {}
    ready = threading.Condition()

    def work() -> None:
        while True:
            try:
                i, item = jobs.get_nowait()
            except queue.Empty:
                return
            try:
                outcome: tuple[str | None, BaseException | None] = (fn(item), None)
            except BaseException as e:  # re-raised in the caller's thread, in order
                outcome = (None, e)
            with ready:
                results[i] = outcome
                ready.notify_all()

    for _ in range(min(workers, len(items))):
        threading.Thread(target=work, daemon=True).start()
    for i in range(len(items)):
        with ready:
            ready.wait_for(lambda i=i: i in results)
            value, error = results.pop(i)
        if error is not None:
            raise error
        yield value


def check_images(root: str, paths: Sequence[str]) -> dict[str, str]:
    """Decodes every file of `paths` fully (cached verdicts reused), in parallel.

    Args:
      root: the folder the files belong to (where the verdicts are kept).
      paths: the image files to check.

    Returns:
      {path: why it cannot be used} for the bad files (empty if all are fine).
    """
    root = os.path.abspath(os.path.expanduser(root))
    cache = _load_cache(root)
    verdicts: dict[str, list[Any]] = {}
    todo = []
    for path in paths:
        key = _stat_key(path)
        rel = os.path.relpath(path, root)
        hit = cache.get(rel)
        if key is not None and hit is not None and hit[:2] == key:
            verdicts[rel] = hit
        else:
            todo.append((path, rel, key))
    if todo:
        progress = _Progress(len(todo))
        with _bombs_refused():
            results = _parallel_map(_why_not, [path for path, _, _ in todo], _WORKERS)
            for done, ((_, rel, key), why) in enumerate(zip(todo, results, strict=True), 1):
                verdicts[rel] = [*(key or [-1, -1]), why]
                progress.update(done)
        seconds = progress.close()
        if seconds >= PROGRESS_AFTER_S:  # a real check: say what it did and where its verdicts are
            print(f"checked {len(todo)} images of {root} in {seconds:.0f} s "
                  f"({len(todo) / seconds:.0f} files/s; {len(paths) - len(todo)} unchanged "
                  "since the last check)", file=sys.stderr, flush=True)
        _save_cache(root, verdicts)
    return {os.path.join(root, rel): v[2] for rel, v in sorted(verdicts.items()) if v[2]}


def _listing(root: str, class_dirs: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(images training reads, images in other formats, other entries) of class folders
    (and the files beside them in their split folders)."""
    known = set(Image.registered_extensions())
    images, other_images, others = [], [], []
    for split_dir in sorted({os.path.dirname(d) for d in class_dirs}):
        # Files beside the class folders (train/notes.txt): tfds skips them too.
        others += [e.path for e in sorted(os.scandir(split_dir), key=lambda e: e.name)
                   if not e.is_dir() and not e.name.startswith(".")]
    for class_dir in class_dirs:
        for entry in sorted(os.scandir(class_dir), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue  # hidden (.DS_Store, editors' files): tfds skips them too
            ext = os.path.splitext(entry.name)[1].lower()
            if entry.is_dir():
                others.append(entry.path + os.sep)
            elif ext in EXTENSIONS:
                images.append(entry.path)
            elif ext in known:
                other_images.append(entry.path)
            else:
                others.append(entry.path)
    return images, other_images, others


def _named(items: Sequence[str]) -> str:
    more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return ", ".join(items[:_LISTED]) + more


def check_folder(root: str, class_dirs: Sequence[str]) -> None:
    """Checks every file of an image folder's class folders (see the module docstring).

    Args:
      root: the dataset folder (PATH of `folder:PATH`).
      class_dirs: its class folders, e.g. PATH/train/cat, of every split.

    Raises:
      DatasetError: one line naming the files training cannot use (a few, and a count).
    """
    root = os.path.abspath(os.path.expanduser(root))
    images, other_images, others = _listing(root, class_dirs)
    bad = check_images(root, images)
    bad.update({p: f"a {os.path.splitext(p)[1]} file: training reads "
                   f"{'/'.join(EXTENSIONS)} files only, convert it" for p in other_images})
    if len(bad) == 1:
        [(path, why)] = bad.items()
        raise DatasetError(f"{path} is not a readable JPEG or PNG image ({why}); fix or "
                           f"remove it from {root}.")
    if bad:
        listed = _named([f"{p} ({why})" for p, why in sorted(bad.items())])
        raise DatasetError(f"{len(bad)} files in {root} are not readable JPEG or PNG images: "
                           f"{listed}; fix or remove them.")
    if others:
        print(f"warning: {len(others)} entries in the split and class folders of {root} are not "
              f".jpg/.jpeg/.png images and are not used: {_named(others)}", file=sys.stderr,
              flush=True)


def name_decode_errors(batches: Iterator[Any], root: str) -> Iterator[Any]:
    """`batches`, with a TensorFlow read/decode failure of a folder's file named in one line.

    The folder was checked when it was opened; a file that fails now changed since. Its
    verdict is stale (size or mtime), so a re-check finds it quickly.

    Args:
      batches: the input pipeline's iterator over a `folder:` dataset.
      root: the folder.

    Yields:
      The batches.

    Raises:
      DatasetError: the re-check found bad files (named); otherwise TensorFlow's error.
    """
    import tensorflow as tf  # already loaded: the pipeline runs on it

    try:
        yield from batches
    except tf.errors.OpError:
        root = os.path.abspath(os.path.expanduser(root))
        # The files of the last check (a deleted one included), else those there now.
        listed = [os.path.join(root, rel) for rel in _load_cache(root)]
        if not listed:
            splits = [e.path for e in os.scandir(root) if e.is_dir()]
            listed = _listing(root, [e.path for s in splits for e in os.scandir(s)
                                     if e.is_dir()])[0]
        bad = check_images(root, listed)
        if not bad:
            raise
        listed = _named([f"{p} ({why})" for p, why in sorted(bad.items())])
        raise DatasetError(f"Reading the images of {root} failed: {len(bad)} file(s) changed "
                           f"since the check and cannot be decoded: {listed}; fix or remove "
                           "them and rerun the same command.") from None
