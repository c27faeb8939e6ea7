"""The one place where the parallel layout is chosen: "jit", "fsdp" or "pmap".

All three run the same `train_step` body. "jit" shards the batch over a 1-D
`Mesh(devices, ("data",))` and replicates the state; XLA inserts the gradient
all-reduce. "fsdp" is "jit" with every state array (parameters and optimizer moments)
split over the same data axis as well (big_vision's `fsdp` rule, ZeRO-3): each device
keeps 1/n of the state, and XLA's partitioner gathers parameters where the step needs
them whole and reduce-scatters the gradients; nothing here writes a collective. "pmap"
maps the step over local devices with `axis_name="batch"`, the step averaging gradients
with `lax.pmean`. Across hosts all of them work on global arrays built from each
process's slice of the batch, and checkpoints are written from the arrays as they are
sharded (each process saves its shards).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vit_core.errors import ConfigError

DATA_AXIS = "data"  # mesh axis of the "jit" and "fsdp" layouts
PMAP_AXIS = "batch"  # axis name of the "pmap" layout


def fsdp_spec(shape: Sequence[int], n: int) -> PartitionSpec:
    """big_vision's `fsdp` rule: split the largest dimension that `n` divides, n ways.

    Args:
      shape: an array's shape.
      n: the number of devices on the data axis.

    Returns:
      A spec naming `DATA_AXIS` on that dimension (the first of equal largest ones), or
      `PartitionSpec()` (replicated) when no dimension is divisible by `n`, e.g. scalars.
    """
    dims = [i for i, size in enumerate(shape) if size and size % n == 0]
    if not dims:
        return PartitionSpec()
    split = max(dims, key=lambda i: shape[i])  # max() keeps the first of equal sizes
    return PartitionSpec(*(DATA_AXIS if i == split else None for i in range(len(shape))))


class Layout(abc.ABC):
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

    @abc.abstractmethod
    def array_sharding(self, shape: Sequence[int]) -> jax.sharding.Sharding:
        """Where a state array of this shape is restored to (see `restore_target`)."""

    def restore_target(self, state_shapes: Any) -> Any:
        """The orbax restore target: `state_shapes` with each array's sharding.

        orbax reads every array straight into its sharding, whatever the device count
        or layout of the run that saved it.

        Args:
          state_shapes: `jax.eval_shape` of a fresh state.

        Returns:
          The same tree of `jax.ShapeDtypeStruct`s, each with a `sharding`.
        """
        return jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.array_sharding(s.shape)),
            state_shapes)


class JitLayout(Layout):
    """Batch sharded over a device mesh, state replicated, one `jax.jit` with donation."""

    def __init__(self) -> None:
        super().__init__()
        self.mesh = Mesh(np.asarray(jax.devices()), (DATA_AXIS,))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
        # The state's shardings (a tree like the state), fixed when a state is placed:
        # the train step is compiled for exactly these.
        self.state_sharding: Any = None

    def array_sharding(self, shape: Sequence[int]) -> NamedSharding:
        del shape  # every state array is whole on every device
        return self.replicated

    def _plan(self, state_shapes: Any) -> Any:
        """Fixes `state_sharding` for a state of these shapes and returns it."""
        self.state_sharding = jax.tree.map(lambda s: self.array_sharding(s.shape), state_shapes)
        return self.state_sharding

    def init_state(self, init_fn: Callable[[Any], Any], pretrained: Any) -> Any:
        # Built directly in its final sharding: never a full copy on one device first.
        shardings = self._plan(jax.eval_shape(init_fn, pretrained))
        if pretrained is not None:  # host arrays: each device gets only its own shard
            pretrained = jax.tree.map(
                lambda x, s: jax.make_array_from_callback(x.shape, s, lambda i: x[i]),
                pretrained, shardings.params)
        return jax.jit(init_fn, out_shardings=shardings)(pretrained)

    def restore_target(self, state_shapes: Any) -> Any:
        self._plan(state_shapes)
        return super().restore_target(state_shapes)

    def place_restored(self, state: Any) -> Any:
        return state  # orbax restored it into `state_sharding` already

    def shard_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
                for k, v in batch.items()}

    def compile_train_step(self, step_fn: Callable[..., Any]) -> Callable[..., Any]:
        if self.state_sharding is None:
            raise RuntimeError("Place a state first (init_state or restore_target): the "
                               "train step is compiled for its shardings.")
        return jax.jit(
            self._counted(step_fn), in_shardings=(self.state_sharding, self.batch_sharding),
            out_shardings=(self.state_sharding, self.replicated), donate_argnums=0)

    def compile_eval_step(self, eval_fn: Callable[..., Any]) -> Callable[..., Any]:
        # The params keep the sharding they come with (None): the state's during training,
        # replicated for host (numpy) params such as a loaded checkpoint's.
        return jax.jit(eval_fn, in_shardings=(None, self.batch_sharding),
                       out_shardings=self.replicated)

    def step_of(self, state: Any) -> int:
        return int(jax.device_get(state.step))

    def host_state(self, state: Any) -> Any:
        return state  # global arrays: orbax saves each process's shards

    def unreplicate(self, tree: Any) -> Any:
        return tree


class FsdpLayout(JitLayout):
    """"jit" with each state array split over the data axis by `fsdp_spec` (1/n per device).

    The batch stays split over the same axis, so this is still data parallelism: the
    gathered parameters are transient, live only inside the step, and the gradients'
    all-reduce becomes a reduce-scatter followed by a sharded optimizer update.
    """

    def array_sharding(self, shape: Sequence[int]) -> NamedSharding:
        return NamedSharding(self.mesh, fsdp_spec(shape, self.mesh.size))


class PmapLayout(Layout):
    """The same step under `jax.pmap` over local devices, explicit `lax.pmean`."""

    axis_name = PMAP_AXIS

    def init_state(self, init_fn: Callable[[Any], Any], pretrained: Any) -> Any:
        n = jax.local_device_count()
        # The step's axis name: outputs of a pmap carry a mesh named by its axis, and a
        # state on another mesh than the step's output would recompile the step once more.
        return jax.pmap(lambda _: init_fn(pretrained), axis_name=PMAP_AXIS)(np.arange(n))

    def array_sharding(self, shape: Sequence[int]) -> jax.sharding.Sharding:
        del shape  # read onto one device; `place_restored` copies it to the others
        return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def place_restored(self, state: Any) -> Any:
        n = jax.local_device_count()
        return jax.pmap(lambda _, s: s, in_axes=(0, None), axis_name=PMAP_AXIS)(np.arange(n),
                                                                                 state)

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
        return self.unreplicate(state)

    def unreplicate(self, tree: Any) -> Any:
        # Device 0's copy, read as it is: `x[0]` on a device array would compile a gather
        # for every distinct leaf shape (~100 small compiles, seconds, for a ViT's state).
        return jax.tree.map(
            lambda x: np.asarray(x.addressable_shards[0].data)[0] if isinstance(x, jax.Array)
            else x[0], tree)


LAYOUTS: dict[str, type[Layout]] = {"jit": JitLayout, "fsdp": FsdpLayout, "pmap": PmapLayout}


def create_layout(config: Any) -> Layout:
    """The layout named by `config.parallelism` (a key of `LAYOUTS`)."""
    if config.parallelism not in LAYOUTS:
        raise ConfigError(f"config.parallelism must be one of {', '.join(map(repr, LAYOUTS))}, "
                          f"got {config.parallelism!r}.")
    return LAYOUTS[config.parallelism]()
