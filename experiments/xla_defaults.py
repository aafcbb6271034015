"""XLA options the launcher sets before JAX is imported, unless the user set XLA_FLAGS.

`--xla_cpu_experimental_ynn_fusion_type=dot,reduce` lets XLA:CPU compile dots and reductions
with its YNNPACK fusions instead of Eigen. Measured on the RL update of benchmarks/rl_step.py
(4-layer Llama, hidden 256, 64 rows x 320 tokens, 2 CPU threads): forward + backward 12.3 s
against 17.8 s (best of 4), with gradients equal to float32 rounding (max relative difference
5e-7 at 4x80, 4x320, 3x17 and 64x33 tokens, losses bit-identical). The option only concerns
the CPU backend, so it is inert on GPU and TPU.

`set_cpu_devices` (the launcher's `--cpu_devices`) splits the host into several XLA:CPU
devices, so that the mesh's batch axes (`--mesh_data`) can spread the rows over them. XLA:CPU
runs a batched matmul with small matrices, such as a decode step's attention over its KV cache,
on one thread whatever the thread pool holds; with the rows split over devices, each device
runs its share concurrently. `benchmarks/rl_step.py` measures it against one device.
"""

from __future__ import annotations

import os

CPU_FLAGS = '--xla_cpu_experimental_ynn_fusion_type=dot,reduce'


def apply() -> bool:
  """Sets XLA_FLAGS to `CPU_FLAGS` when it is unset; True if it did.

  A user's XLA_FLAGS, even empty, is left alone, so `XLA_FLAGS= python -m experiments.launch`
  runs with XLA's own defaults. Must run before JAX is first imported.
  """
  if 'XLA_FLAGS' in os.environ:
    return False
  os.environ['XLA_FLAGS'] = CPU_FLAGS
  return True


def set_cpu_devices(n: int) -> bool:
  """Makes JAX's CPU backend `n` devices (`jax_num_cpu_devices`); 0 leaves it alone.

  Must run before JAX initialises its backends (before the first device is touched); it
  overrides `--xla_force_host_platform_device_count` in XLA_FLAGS. Inert on GPU and TPU,
  whose devices JAX counts from the hardware. Returns True if it set the count.

  Raises:
    ValueError: (one line) if JAX has already started with another number of CPU devices.
  """
  if not n:
    return False
  import jax  # pylint: disable=g-import-not-at-top  (imported only when asked for)
  try:
    jax.config.update('jax_num_cpu_devices', int(n))
  except RuntimeError:  # the backends are up: the count can no longer change
    have = len(jax.devices('cpu'))
    if have != n:
      raise ValueError(f'cpu_devices={n}: JAX has already started with {have} CPU devices; '
                       'set the count before anything touches a device') from None
    return False
  return True
