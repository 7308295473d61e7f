"""Device meshes, shardings and multi-process start-up: the one module that knows devices.

Training and planning are written once, for a mesh of any size (one device is a mesh of
shape ``(1,)``, through the same code)::

    cfg = parallel_config(config)           # the config's ``parallel`` section, defaults filled
    initialize(cfg)                          # multi-process only; a no-op otherwise
    mesh = make_mesh(cfg)                    # all devices on the "data" axis by default
    batch = NamedSharding(mesh, P("data"))   # (B, ...) split in B / n rows per device
    state = tree_shardings(abstract_state, mesh, cfg)   # replicated, or FSDP-split

* Batch: sharded over ``data_axis``; under ``jit`` GSPMD keeps batch statistics (VICReg,
  SIGReg) global, so a step on n devices computes the same loss as on one.
* Parameters and optimizer state: replicated (data parallel), or with ``fsdp`` each leaf of
  at least ``fsdp_min_size`` elements split along its largest dimension that the axis size
  divides (ZeRO-3/FSDP: XLA all-gathers it where used and reduce-scatters its gradient).
* Multi-process: every process builds the same global mesh over ``jax.devices()``; arrays
  that every process holds whole (the data set) become global arrays with
  :func:`put_replicated`.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DEFAULTS: dict[str, Any] = {
    "mesh_shape": (-1,),  # -1: all remaining devices
    "axis_names": ("data",),
    "data_axis": "data",  # the batch axis is split over this mesh axis
    "num_devices": 0,  # 0: all devices; n: the first n (e.g. to compare with fewer)
    "fsdp": False,  # split parameters and optimizer state over the data axis as well
    "fsdp_min_size": 2**14,  # leaves smaller than this stay replicated
    # Multi-process (empty / -1: read JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
    # JAX_PROCESS_ID; none set: single process).
    "coordinator_address": "",
    "num_processes": -1,
    "process_id": -1,
    "initialization_timeout": 60,  # seconds to reach the coordinator and the other processes
}


def parallel_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config's ``parallel`` section over ``DEFAULTS`` (runs saved before it existed
    have none)."""
    section = config.get("parallel") if hasattr(config, "get") else None
    values = dict(DEFAULTS)
    if section is not None:
        values.update(section.to_dict() if hasattr(section, "to_dict") else dict(section))
    values["mesh_shape"] = tuple(values["mesh_shape"])
    values["axis_names"] = tuple(values["axis_names"])
    return ml_collections.ConfigDict(values)


# ------------------------------------------------------------------------- multi-process


def _distributed_args(cfg: ml_collections.ConfigDict) -> tuple[str, int, int] | None:
    """(coordinator, num_processes, process_id) from the config or the environment."""
    address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    num = cfg.num_processes if cfg.num_processes >= 0 else int(
        os.environ.get("JAX_NUM_PROCESSES", "-1"))
    pid = cfg.process_id if cfg.process_id >= 0 else int(os.environ.get("JAX_PROCESS_ID", "-1"))
    if not address and num in (-1, 1):
        return None
    missing = [name for name, bad in (("coordinator_address", not address),
                                      ("num_processes", num < 1), ("process_id", pid < 0))
               if bad]
    if missing:
        raise ValueError(f"multi-process run needs parallel.{', parallel.'.join(missing)} "
                         f"(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
    if not 0 <= pid < num:
        raise ValueError(f"parallel.process_id={pid} must be in [0, num_processes={num})")
    if address.rpartition(":")[0] == "" or not address.rpartition(":")[2].isdigit():
        raise ValueError(f"parallel.coordinator_address {address!r} must be HOST:PORT")
    return address, num, pid


def wait_for_coordinator(address: str, timeout: float) -> None:
    """Retries a TCP connection to ``address`` (HOST:PORT) for ``timeout`` seconds.

    Raises:
      RuntimeError: one line, when nothing accepts connections there in time (JAX's own
        client would otherwise retry, and log, for its whole ``initialization_timeout``).
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"cannot reach the coordinator at {address} within "
                                   f"{timeout:g} s ({exc.strerror or exc}); is process 0 "
                                   f"running, and is the address right?") from None
            time.sleep(0.2)


def _exit_unless_cancelled(seconds: float, message: str) -> threading.Timer:
    """After ``seconds``, prints ``error: message`` and exits the process with status 1.

    Why: when the other processes do not all join, JAX's distributed client aborts the
    whole process from C++ (a fatal log and a stack trace, nothing Python can catch); this
    timer fires first and leaves one line instead.
    """
    def fire() -> None:
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(1)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def initialize(cfg: ml_collections.ConfigDict) -> bool:
    """Starts ``jax.distributed`` when the config or the environment asks for several
    processes; returns whether it did. Call before any other JAX computation.

    Raises:
      ValueError: incomplete or inconsistent settings.
      RuntimeError: the coordinator is unreachable within ``initialization_timeout``
        seconds (checked before JAX is asked; one line).

    When the coordinator is up but not all processes join within the timeout, the process
    exits with status 1 and one ``error:`` line on stderr (JAX itself would abort it).
    """
    args = _distributed_args(cfg)
    if args is None:
        return False
    address, num, pid = args
    if jax.distributed.is_initialized():
        return True
    timeout = float(cfg.initialization_timeout)
    if pid != 0:  # process 0 starts the coordinator itself
        wait_for_coordinator(address, timeout)
    timer = _exit_unless_cancelled(
        timeout, f"process {pid}: not all {num} processes joined the coordinator at "
                 f"{address} within {timeout:g} s (parallel.initialization_timeout)")
    try:
        # JAX's own deadline a little later, so that the timer above speaks first.
        jax.distributed.initialize(address, num, pid,
                                   initialization_timeout=int(math.ceil(timeout)) + 10)
    except Exception as exc:  # JAX raises multi-line runtime errors here
        first = " ".join(str(exc).split())[:200]
        raise RuntimeError(f"jax.distributed.initialize (process {pid} of {num}, "
                           f"coordinator {address}) failed: {first}") from None
    finally:
        timer.cancel()
    return True


def is_main_process() -> bool:
    """Whether this process writes the run's files (logs, configs, plots)."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Barrier across processes (a no-op with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# --------------------------------------------------------------------------------- meshes


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Fills one ``-1`` in ``shape`` so that its product is ``num_devices``.

    Raises:
      ValueError: the shape cannot cover exactly ``num_devices`` devices.
    """
    shape = tuple(int(s) for s in shape)
    if not shape or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"parallel.mesh_shape {shape} must hold positive sizes and at most "
                         f"one -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ValueError(f"parallel.mesh_shape {shape} does not fit {num_devices} "
                             f"devices ({num_devices} is not a multiple of {known})")
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != num_devices:
        raise ValueError(f"parallel.mesh_shape {shape} needs {math.prod(shape)} devices, but "
                         f"{num_devices} are in use (set parallel.num_devices, or -1 in the "
                         f"shape)")
    return shape


def make_mesh(cfg: ml_collections.ConfigDict,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The mesh of ``cfg`` (see ``DEFAULTS``) over ``devices`` (default: all, global).

    Axes are ``AxisType.Auto``: GSPMD propagates shardings from the inputs and the
    ``with_sharding_constraint`` hints, so model code needs no sharding annotations.

    Raises:
      ValueError: one line, on a shape that does not match the device count, unknown axis
        names or more devices asked for than exist.
    """
    devices = list(jax.devices() if devices is None else devices)
    if cfg.num_devices:
        if not 0 < cfg.num_devices <= len(devices):
            raise ValueError(f"parallel.num_devices={cfg.num_devices}, but {len(devices)} "
                             f"devices are available")
        devices = devices[:cfg.num_devices]
    names = tuple(cfg.axis_names)
    if len(names) != len(cfg.mesh_shape) or len(set(names)) != len(names):
        raise ValueError(f"parallel.axis_names {names} must name each of the "
                         f"{len(cfg.mesh_shape)} axes of parallel.mesh_shape once")
    if cfg.data_axis not in names:
        raise ValueError(f"parallel.data_axis {cfg.data_axis!r} is not one of the mesh axes "
                         f"{names}")
    shape = resolve_mesh_shape(cfg.mesh_shape, len(devices))
    # Process-major device order, so that each process's devices hold contiguous rows.
    grid = np.array(devices, dtype=object).reshape(shape)
    return Mesh(grid, names, axis_types=(AxisType.Auto,) * len(names))


def axis_size(mesh: Mesh, axis: str) -> int:
    """Number of devices along ``axis``."""
    return int(mesh.shape[axis])


def check_divisible(size: int, mesh: Mesh, axis: str, name: str) -> None:
    """ValueError unless ``size`` splits evenly over ``axis`` (call before tracing)."""
    n = axis_size(mesh, axis)
    if size % n:
        raise ValueError(f"{name}={size} is not divisible by the {n} devices of mesh axis "
                         f"{axis!r}; use a multiple of {n}")


# ------------------------------------------------------------------------------ shardings


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, axis: str) -> NamedSharding:
    """Leading (batch) dimension split over ``axis``; the rest whole."""
    return NamedSharding(mesh, P(axis))


def fsdp_spec(shape: Sequence[int], axis: str, axis_size_: int, min_size: int) -> P:
    """The FSDP partition of one leaf: its largest dimension divisible by ``axis_size_``
    split over ``axis`` (ties: the later dimension, usually the output features), or
    replicated when the leaf is small or no dimension divides."""
    if math.prod(shape) < min_size or axis_size_ == 1:
        return P()
    dims = [i for i, s in enumerate(shape) if s % axis_size_ == 0]
    if not dims:
        return P()
    best = max(dims, key=lambda i: (shape[i], i))
    return P(*[axis if i == best else None for i in range(len(shape))])


def tree_shardings(tree: Any, mesh: Mesh, cfg: ml_collections.ConfigDict) -> Any:
    """NamedShardings for every leaf of ``tree`` (arrays or ShapeDtypeStructs): replicated,
    or FSDP-split when ``cfg.fsdp`` (PRNG keys and scalars always replicated)."""
    n = axis_size(mesh, cfg.data_axis)

    def one(leaf: Any) -> NamedSharding:
        shape = tuple(getattr(leaf, "shape", ()))
        if not cfg.fsdp or jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return replicated(mesh)
        return NamedSharding(mesh, fsdp_spec(shape, cfg.data_axis, n, cfg.fsdp_min_size))

    return jax.tree.map(one, tree)


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """``ShapeDtypeStruct`` leaves of ``abstract`` carrying ``shardings`` (restore targets)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    """Global arrays, replicated over ``mesh``, of a pytree that every process holds whole
    (e.g. the data set, generated from the same seed everywhere). Works with several
    processes, where ``jax.device_put`` onto non-local devices does not."""
    sharding = replicated(mesh)

    def one(x: Any) -> jax.Array:
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(one, tree)


def to_host(tree: Any) -> Any:
    """NumPy copies of global arrays, whatever their sharding (all processes must call it:
    sharded leaves are all-gathered first)."""
    def one(x: Any) -> Any:
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
            return jax.device_get(x)
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(x, tiled=True)

    return jax.tree.map(one, tree)
