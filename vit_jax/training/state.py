"""Train state and its orbax checkpoints in a workdir.

A checkpoint holds the whole `TrainState` (step, params, optimizer state). The data
position and the dropout RNG are functions of the step and `config.seed`, so the step
restores them too. orbax writes each checkpoint into a temporary directory and renames
it when complete, so a kill during a save never leaves a half-written "latest" step
(leftover temporary directories are removed on the next start). A checkpoint damaged
later (a truncated or deleted file) is reported, moved to `unreadable_checkpoints/`,
and the previous one is used.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from vit_core.errors import CheckpointError, DiskFullError, WorkdirError
from vit_jax.model import vit

# Config fields that may change between runs in one workdir without changing the run.
# (The step count is not among them: it shapes the learning-rate schedule.)
RESUMABLE_CHANGES = frozenset({
    "log_every_steps", "eval_every_steps",
    "checkpoint_every_steps", "max_checkpoints_to_keep", "sync_every_steps", "data_dir",
    "eval_batch_size", "prefetch", "test_split", "init_checkpoint_dir", "fewshot",
})


class ConfigMismatchError(WorkdirError):
    """The workdir holds a run of a different config."""


class CheckpointUnreadableError(CheckpointError):
    """The workdir has checkpoints, but none of them can be restored."""


def is_disk_full(error: BaseException) -> bool:
    """True if `error` or an exception it wraps (orbax wraps several deep) is ENOSPC."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(e):  # tensorstore reports it as text
            return True
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    return False


def check_workdir(workdir: str) -> str:
    """Creates `workdir` if needed and checks that it is a writable directory.

    Args:
      workdir: the run's directory.

    Returns:
      Its absolute path.

    Raises:
      WorkdirError: it is a file, or it cannot be created or written.
    """
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"--workdir {workdir} is a file, not a directory; pass a directory "
                           "(it is created if missing).")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"cannot create the workdir {workdir}: {e.strerror}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise WorkdirError(f"the workdir {workdir} is not writable by this user; choose "
                           "another --workdir or change its permissions.")
    return path


def _short_error(error: BaseException, limit: int = 300) -> str:
    """`Type: first line` of the root cause, cut to `limit` characters (orbax's are huge)."""
    while error.__cause__ is not None:  # orbax wraps tensorstore's precise message
        error = error.__cause__
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[:limit] + "..."


def _everywhere(ok: bool) -> bool:
    """True iff `ok` holds on every process (a collective when there are several)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def restore_params(checkpoint_dir: str, step: int | None = None) -> tuple[int, Any] | None:
    """The params of a checkpoint in `checkpoint_dir` (the newest by default), as numpy arrays.

    The restore target is the saved shapes and dtypes placed on this process's first
    local device, not the saved sharding: that names the devices of the processes that
    trained (a workdir written by 2 processes would not load in 1, "topology mismatch").

    Args:
      checkpoint_dir: a workdir's `checkpoints` directory (opened read-only).
      step: the step to restore; None: the newest.

    Returns:
      (step, params tree of numpy arrays), or None if there is no checkpoint yet.

    Raises:
      CheckpointError: no checkpoint of `step` (the message lists the steps there are).
    """
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add("state", ocp.args.StandardRestore, ocp.StandardCheckpointHandler())
    registry.add("meta", ocp.args.JsonRestore, ocp.JsonCheckpointHandler())
    manager = ocp.CheckpointManager(
        checkpoint_dir,
        handler_registry=registry,
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    try:
        steps = manager.all_steps()
        if not steps:
            return None
        if step is not None and step not in steps:
            raise CheckpointError(
                f"{os.path.dirname(checkpoint_dir.rstrip(os.sep))} has no checkpoint of step "
                f"{step}; it has steps {sorted(steps)}.")
        step = max(steps) if step is None else step
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            manager.item_metadata(step)["state"],
        )
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        )
    finally:
        manager.close()
    return step, jax.tree.map(np.asarray, restored["state"]["params"])


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training."""

    step: jax.Array
    params: Any
    opt_state: Any

    @classmethod
    def create(
        cls, model: vit.VisionTransformer, tx: optax.GradientTransformation,
        config: ml_collections.ConfigDict, pretrained: Any = None,
    ) -> TrainState:
        """Fresh state: random init (seeded by config.seed), or the given params."""
        if pretrained is None:
            images = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
            params = model.init(jax.random.key(config.seed), images)["params"]
        else:
            params = jax.tree.map(jnp.asarray, pretrained)
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def read_workdir_config(path: str) -> dict[str, Any]:
    """A workdir's `config.json` as a dict (an untrusted file: bounded, checked).

    Raises:
      WorkdirError: not readable JSON, or not a JSON object.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 24)  # a config is a few kB
        value = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise WorkdirError(f"{path} is not a readable vit_jax config.json: "
                           f"{str(e).splitlines()[0]}") from None
    if not isinstance(value, dict):
        raise WorkdirError(f"{path} holds a JSON {type(value).__name__}, not a config object.")
    return value


def with_missing_fields(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`saved` with every field of `defaults` it lacks added (nested dicts merged).

    Args:
      saved: a workdir's config.json, possibly written before some fields existed.
      defaults: the current defaults, as JSON values.

    Returns:
      A new dict; the saved values always win.
    """
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = with_missing_fields(out[key], value)
    return out


def _comparable(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return {k: v for k, v in json.loads(config.to_json()).items() if k not in RESUMABLE_CHANGES}


class CheckpointStore:
    """orbax `CheckpointManager` over `workdir/checkpoints`, plus `workdir/config.json`.

    Args:
      workdir: the run's directory (created if needed).
      config: this run's config; a workdir written by a different config is refused.
      defaults: every field's default (`configs/default.py`): a field that the workdir's
        config.json lacks (written before the field existed) counts as its default.
    """

    def __init__(self, workdir: str, config: ml_collections.ConfigDict,
                 defaults: ml_collections.ConfigDict | None = None) -> None:
        self.workdir = check_workdir(workdir)
        self._pending_config: str | None = None
        self._check_config(config, defaults)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=config.max_checkpoints_to_keep, enable_async_checkpointing=True,
            create=True,
            # A save killed midway leaves `<step>.orbax-checkpoint-tmp-*`: never restored
            # (not a step), and removed here by process 0.
            cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(
            os.path.join(self.workdir, "checkpoints"), options=options,
            item_names=("state", "meta"))

    def _check_config(self, config: ml_collections.ConfigDict,
                      defaults: ml_collections.ConfigDict | None) -> None:
        path = os.path.join(self.workdir, "config.json")
        if os.path.exists(path):
            saved = read_workdir_config(path)
            if defaults is not None:
                saved = with_missing_fields(saved, json.loads(defaults.to_json()))
            old, new = _comparable(ml_collections.ConfigDict(saved)), _comparable(config)
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff:
                lines = [f"  {k}: workdir has {old.get(k)!r}, this run has {new.get(k)!r}"
                         for k in diff]
                raise ConfigMismatchError(
                    f"The workdir {self.workdir} belongs to a run with a different config; "
                    "refusing to resume into it. Use a new --workdir, or restore the old "
                    "values:\n" + "\n".join(lines))
        else:  # written with the first checkpoint: a run that fails to start leaves none
            self._pending_config = config.to_json(indent=2)

    def _write_pending_config(self) -> None:
        """Writes this run's config.json (process 0) if the workdir had none."""
        if self._pending_config is not None and jax.process_index() == 0:
            path = os.path.join(self.workdir, "config.json")
            with open(path + ".tmp", "w") as f:
                f.write(self._pending_config)
            os.replace(path + ".tmp", path)  # never a half-written config.json
        self._pending_config = None

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def save(self, step: int, state: TrainState) -> None:
        """Starts an asynchronous save of `state` at `step` (all processes call this).

        Raises:
          DiskFullError: the disk filled up (this save or the previous asynchronous one).
        """
        with self.disk_full_is_user_error():
            self.manager.wait_until_finished()  # the previous save is complete: measure it
            self._check_room()
            self._write_pending_config()
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
                meta=ocp.args.JsonSave({"step": int(step)})), force=True)

    @contextlib.contextmanager
    def disk_full_is_user_error(self) -> Iterator[None]:
        """Turns an ENOSPC anywhere inside (orbax wraps it deep) into one `DiskFullError`.

        A failed save leaves only a temporary directory, which orbax never restores and
        removes at the next start: the last complete checkpoint is untouched.

        Raises:
          DiskFullError: naming the disk, its free space and the last good checkpoint.
        """
        try:
            yield
        except Exception as e:
            if not is_disk_full(e):
                raise
            raise self._disk_full_error() from None

    def _disk_full_error(self, need: int | None = None) -> DiskFullError:
        usage = shutil.disk_usage(self.workdir)
        self.manager.reload()  # a save that failed is not listed as a step
        steps = self.manager.all_steps()
        last = (f"the last good checkpoint is step {max(steps)} in "
                f"{self.manager.directory}" if steps else "no checkpoint was saved yet")
        needs = f", a checkpoint needs {need / 2**20:.1f} MiB" if need else ""
        return DiskFullError(
            f"the disk holding {self.workdir} is full ({usage.free / 2**20:.1f} MiB free "
            f"of {usage.total / 2**20:.1f} MiB{needs}); {last}. Free some space and run the "
            "same command again to resume.")

    def _check_room(self) -> None:
        """Refuses to start a save that cannot fit (as large as the latest checkpoint).

        Checked before the save: a save that fails midway fails inside orbax's threads,
        whose tensorstore writes still in flight print tracebacks from C code.
        """
        latest = self.manager.latest_step()
        if latest is None:
            return
        need = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in
                   os.walk(os.path.join(os.fspath(self.manager.directory), str(latest)))
                   for f in files)
        if not _everywhere(shutil.disk_usage(self.workdir).free >= need):
            raise self._disk_full_error(need)

    def restore_latest(self, state_shapes: TrainState, layout: Any) -> TrainState | None:
        """Restores the newest readable checkpoint; falls back to older ones if corrupt.

        A checkpoint that cannot be read (truncated or deleted files, ...) is reported in
        one line and moved to `workdir/unreadable_checkpoints/`, so that the run can save
        that step again; it is kept there for inspection. All processes agree on which
        checkpoints are readable.

        Args:
          state_shapes: `jax.eval_shape` of a fresh state (the restore target).
          layout: the `vit_jax.training.parallel` layout that places the restored arrays.

        Returns:
          The placed state, or None if the workdir has no checkpoint yet.

        Raises:
          CheckpointUnreadableError: there are checkpoints, but none can be restored.
        """
        target = flax.serialization.to_state_dict(layout.restore_target(state_shapes))
        steps = sorted(self.manager.all_steps(), reverse=True)
        unreadable: dict[int, str] = {}
        for step in steps:
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target)))
                error = None
            except Exception as e:  # any unreadable checkpoint is skipped, whatever the cause
                error = _short_error(e)
            if not _everywhere(error is None):
                unreadable[step] = error or "unreadable on another process"
                print(f"WARNING: the checkpoint at step {step} in {self.manager.directory} "
                      f"cannot be restored ({unreadable[step]}); trying the previous one.",
                      flush=True)
                continue
            self._move_aside(unreadable)
            state = flax.serialization.from_state_dict(state_shapes, restored["state"])
            print(f"Resuming from the checkpoint at step {step} in {self.workdir}.", flush=True)
            return layout.place_restored(state)
        if unreadable:
            raise CheckpointUnreadableError(
                f"None of the checkpoints in {self.manager.directory} can be restored:\n"
                + "\n".join(f"  step {s}: {e}" for s, e in unreadable.items())
                + "\nMove them away (or use a new --workdir) to start from scratch.")
        return None

    def _move_aside(self, unreadable: dict[int, str]) -> None:
        """Moves unreadable step directories out of orbax's sight (process 0 does it)."""
        if not unreadable:
            return
        aside = os.path.join(self.workdir, "unreadable_checkpoints")
        if jax.process_index() == 0:
            os.makedirs(aside, exist_ok=True)
            for step in unreadable:
                src = os.path.join(os.fspath(self.manager.directory), str(step))
                dst = os.path.join(aside, f"{step}.{int(time.time())}")
                os.replace(src, dst)
                print(f"WARNING: moved the unreadable checkpoint of step {step} to {dst}.",
                      flush=True)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("vit_jax: unreadable checkpoints moved")
        self.manager.reload()

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk.

        Raises:
          DiskFullError: the disk filled up during a save.
        """
        with self.disk_full_is_user_error():
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
