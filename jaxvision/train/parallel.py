"""Data parallelism over every device of every process: one `data` mesh axis, sharded batches.

The same code runs on 1 device, 8 devices and many hosts: the global batch is split over the
`data` axis, parameters are replicated, and XLA inserts the gradient all-reduce (so BatchNorm
statistics and losses are computed over the global batch).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """Calls `jax.distributed.initialize()` when launched as one of several processes.

    Reads JAXVISION_COORDINATOR (host:port), JAXVISION_NUM_PROCESSES and JAXVISION_PROCESS_ID
    (set by launch/multiprocess.sh); on SLURM or TPU pods JAX discovers them itself when
    JAXVISION_DISTRIBUTED=auto.
    """
    if jax.distributed.is_initialized():
        return
    coordinator = os.environ.get("JAXVISION_COORDINATOR")
    if coordinator:
        num_processes = int(os.environ["JAXVISION_NUM_PROCESSES"])
        process_id = int(os.environ["JAXVISION_PROCESS_ID"])
        if num_processes > 1 and jax.config.jax_platforms in (None, "", "cpu"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    elif os.environ.get("JAXVISION_DISTRIBUTED") == "auto":
        jax.distributed.initialize()


def make_mesh() -> Mesh:
    """A 1-D mesh over all devices of all processes."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """Per-process batch size; the global batch must split evenly over devices."""
    devices = mesh.devices.size
    if global_batch_size % devices:
        raise ValueError(f"train.batch_size={global_batch_size} must be a multiple of the device count ({devices})")
    return global_batch_size // jax.process_count()


def shard_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Assembles each process's share into global arrays sharded over `data`."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def to_host(tree):
    """Fetches replicated (or fully addressable) arrays as numpy on every process."""
    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree.map(fetch, tree)
