"""Multi-process start-up: `jax.distributed.initialize` from the launcher's flags or environment.

A run on several hosts (a TPU pod slice, a multi-node GPU job, or several local CPU processes)
starts the same command on every host. Before anything touches a device, `initialize` connects
the processes through a coordinator, after which `jax.devices()` lists every process's devices
and one mesh spans them all. There are three ways to say how:

* Explicit flags, on every process: ``--coordinator_address=host:port --num_processes=N
  --process_id=i`` (process 0 runs the coordinator at that address).
* ``--distributed=auto``: `jax.distributed.initialize()` with no arguments, which reads the
  cluster from the environment: Cloud TPU VMs (the TPU metadata or ``TPU_WORKER_ID`` /
  ``TPU_WORKER_HOSTNAMES``), SLURM (``SLURM_JOB_ID``, ``SLURM_NTASKS``, ``SLURM_PROCID``, ...),
  Open MPI (``OMPI_MCA_orte_hnp_uri``, ...), mpi4py and Kubernetes Jobs; ``JAX_COORDINATOR_ADDRESS``
  overrides the detected coordinator. Flags given alongside override what it detects.
* Neither (``--distributed=off``, the default, with no flag set): one process, no coordinator.

CPU processes exchange collectives over gloo (JAX's default `jax_cpu_collectives_implementation`
in this version); GPUs use NCCL and TPUs their interconnect, with nothing to configure.
"""

from __future__ import annotations

DISTRIBUTED_MODES = ('off', 'auto')


def validate(mode: str, coordinator_address: str | None, num_processes: int | None,
             process_id: int | None) -> None:
  """Raises ValueError naming the flag and the bad value of an inconsistent combination."""
  if mode not in DISTRIBUTED_MODES:
    raise ValueError(f'--distributed={mode!r} is not one of {", ".join(DISTRIBUTED_MODES)}')
  if num_processes is not None and num_processes < 1:
    raise ValueError(f'--num_processes={num_processes} must be >= 1')
  if process_id is not None and process_id < 0:
    raise ValueError(f'--process_id={process_id} must be >= 0')
  if num_processes is not None and process_id is not None and process_id >= num_processes:
    raise ValueError(f'--process_id={process_id} must be < --num_processes={num_processes}')
  if mode == 'off' and coordinator_address is not None:
    missing = [f'--{n}' for n, v in (('num_processes', num_processes), ('process_id', process_id))
               if v is None]
    if missing:
      raise ValueError(f'--coordinator_address={coordinator_address!r} also needs '
                       f'{" and ".join(missing)} (or --distributed=auto to detect them)')
  elif mode == 'off' and (num_processes is not None or process_id is not None):
    raise ValueError('--num_processes / --process_id need --coordinator_address '
                     '(or --distributed=auto to detect it)')
  if coordinator_address is not None and ':' not in coordinator_address:
    raise ValueError(f'--coordinator_address={coordinator_address!r} must be host:port')


def initialize(mode: str = 'off', coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> bool:
  """Connects this process to the others (see the module docstring); a no-op for one process.

  Call it before anything touches a device (`jax.devices()`, an array, a jit).

  Returns:
    Whether `jax.distributed.initialize` was called.
  """
  validate(mode, coordinator_address, num_processes, process_id)
  if mode == 'off' and coordinator_address is None:
    return False
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  return True


def is_main_process() -> bool:
  """True on process 0 (the one that writes metrics, summaries and config files)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def barrier(name: str, timeout_s: int = 600) -> None:
  """Waits until every process reaches the barrier `name` (a no-op for one process).

  It waits on the coordinator's barrier (orbax's `get_barrier_sync_fn`), not on a device
  collective, so it runs before any computation has set up the cross-process collectives.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    from orbax.checkpoint import multihost  # pylint: disable=g-import-not-at-top
    multihost.get_barrier_sync_fn()(key=name, timeout_ms=timeout_s * 1000)
