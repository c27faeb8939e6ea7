"""The one place where the parallel layout is chosen: "jit" (mesh) or "pmap".

Both layouts run the same `train_step` body. "jit" shards the batch over a 1-D
`Mesh(devices, ("data",))` and replicates the state; XLA inserts the gradient
all-reduce. "pmap" maps the step over local devices with `axis_name="batch"`, the step
averaging gradients with `lax.pmean`. Across hosts both work on global arrays built from
each process's slice of the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vit_jax.errors import ConfigError

DATA_AXIS = "data"  # mesh axis of the "jit" layout
PMAP_AXIS = "batch"  # axis name of the "pmap" layout


class Layout:
    """How state and batches are placed and how the steps are compiled."""

    axis_name: str | None = None

    def __init__(self) -> None:
        self._traces = 0

    def _counted(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Counts traces of `fn` (a retrace = a recompilation): tests assert it stays 1."""

        def wrapped(*args):
            self._traces += 1
            return fn(*args)

        return wrapped

    def trace_count(self) -> int:
        """How many times the train step was traced (1 after any number of steps)."""
        return self._traces

    def check_batch_size(self, batch_size: int, accum: int, *, what: str) -> None:
        """Raises a clear ConfigError unless the batch splits evenly over the devices."""
        n = jax.device_count()
        if batch_size % (n * accum):
            raise ConfigError(
                f"{what}={batch_size} must be divisible by the number of devices ({n})"
                + (f" times grad_accum_steps ({accum})" if accum > 1 else "")
                + f"; e.g. use {what}={max(1, batch_size // (n * accum)) * n * accum}."
            )


class JitLayout(Layout):
    """Batch sharded over a device mesh, state replicated, one `jax.jit` with donation."""

    def __init__(self) -> None:
        super().__init__()
        self.mesh = Mesh(np.asarray(jax.devices()), (DATA_AXIS,))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))

    def init_state(self, init_fn: Callable[[Any], Any], pretrained: Any) -> Any:
        # Built directly in its final sharding: never a full copy on one device first.
        return jax.jit(init_fn, out_shardings=self.replicated)(pretrained)

    def restore_sharding(self) -> jax.sharding.Sharding:
        return self.replicated

    def place_restored(self, state: Any) -> Any:
        return state

    def shard_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
                for k, v in batch.items()}

    def compile_train_step(self, step_fn: Callable[..., Any]) -> Callable[..., Any]:
        return jax.jit(
            self._counted(step_fn), in_shardings=(self.replicated, self.batch_sharding),
            out_shardings=(self.replicated, self.replicated), donate_argnums=0)

    def compile_eval_step(self, eval_fn: Callable[..., Any]) -> Callable[..., Any]:
        return jax.jit(eval_fn, in_shardings=(self.replicated, self.batch_sharding),
                       out_shardings=self.replicated)

    def step_of(self, state: Any) -> int:
        return int(jax.device_get(state.step))

    def host_state(self, state: Any) -> Any:
        return state

    def unreplicate(self, tree: Any) -> Any:
        return tree


class PmapLayout(Layout):
    """The same step under `jax.pmap` over local devices, explicit `lax.pmean`."""

    axis_name = PMAP_AXIS

    def init_state(self, init_fn: Callable[[Any], Any], pretrained: Any) -> Any:
        n = jax.local_device_count()
        return jax.pmap(lambda _: init_fn(pretrained))(np.arange(n))

    def restore_sharding(self) -> jax.sharding.Sharding:
        return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def place_restored(self, state: Any) -> Any:
        n = jax.local_device_count()
        return jax.pmap(lambda _, s: s, in_axes=(0, None))(np.arange(n), state)

    def shard_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = jax.local_device_count()
        return {k: v.reshape(n, v.shape[0] // n, *v.shape[1:]) for k, v in batch.items()}

    def compile_train_step(self, step_fn: Callable[..., Any]) -> Callable[..., Any]:
        return jax.pmap(self._counted(step_fn), axis_name=PMAP_AXIS, donate_argnums=0)

    def compile_eval_step(self, eval_fn: Callable[..., Any]) -> Callable[..., Any]:
        def summed(params, batch):
            return jax.lax.psum(eval_fn(params, batch), PMAP_AXIS)

        return jax.pmap(summed, axis_name=PMAP_AXIS)

    def step_of(self, state: Any) -> int:
        return int(jax.device_get(state.step[0]))

    def host_state(self, state: Any) -> Any:
        return jax.tree.map(lambda x: x[0], state)

    def unreplicate(self, tree: Any) -> Any:
        return jax.tree.map(lambda x: x[0], tree)


def create_layout(config: Any) -> Layout:
    """The layout named by `config.parallelism` ("jit" or "pmap")."""
    layouts = {"jit": JitLayout, "pmap": PmapLayout}
    if config.parallelism not in layouts:
        raise ConfigError(
            f"config.parallelism must be 'jit' or 'pmap', got {config.parallelism!r}.")
    return layouts[config.parallelism]()
