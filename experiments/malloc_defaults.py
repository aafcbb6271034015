"""glibc malloc options for large CPU steps, set before JAX starts its threads where ENV_VAR is 1.

XLA:CPU allocates each execution's buffers with `posix_memalign` on one of its worker threads,
and frees them when the execution ends. With glibc's defaults, a block of that size taken on a
worker thread's arena is `mmap`ed and freed with `munmap`, so every execution writes to fresh
pages, and the kernel faults in and zeroes each of them: about a million page faults per step of
`benchmarks/rl_step.py --setting decode` (it prints them; the README quotes a run). `apply`
makes every thread allocate from the main heap (`M_ARENA_MAX=1`), serves large blocks from it
instead of `mmap` (`M_MMAP_MAX=0`), and never returns its free top to the system
(`M_TRIM_THRESHOLD=-1`), so the next execution reuses pages that are already mapped. The cost is
that the process keeps the peak size of its heap until it exits. The options concern host memory
only: on GPU and TPU the device buffers are not malloc's.

They are opt-in (`RLJAX_LARGE_BLOCK_MALLOC=1`): with one arena, small steps pay for the shared
lock, and the default experiment's RL steps are slower with them (the README gives the runs).
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# (parameter, value): one arena, no mmap for large blocks, no trimming of the heap's top.
OPTIONS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
# The environment variable that turns the options on: '1' on; unset, '' or '0' off.
ENV_VAR = 'RLJAX_LARGE_BLOCK_MALLOC'


def _glibc():
  """The process's C library through ctypes if it is glibc (Linux), else None."""
  if not sys.platform.startswith('linux'):
    return None
  try:
    if not os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc'):
      return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, 'mallopt') else None
  except (ValueError, OSError, AttributeError):
    return None


def apply() -> bool:
  """Sets `OPTIONS` with glibc's `mallopt` where `ENV_VAR` is '1'; True if it did.

  Does nothing where it is unset, '' or '0', where GLIBC_TUNABLES is set (the user's own
  malloc options), and where the C library is not glibc. Must run before JAX is first
  imported: a thread keeps the arena it got at its first allocation.

  Raises:
    ValueError: `ENV_VAR` has another value (named in the message).
  """
  value = os.environ.get(ENV_VAR, '')
  if value not in ('', '0', '1'):
    raise ValueError(f'{ENV_VAR} must be 0 or 1, got {value!r}')
  if value != '1' or 'GLIBC_TUNABLES' in os.environ:
    return False
  libc = _glibc()
  if libc is None:
    return False
  libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  return all(libc.mallopt(param, value) == 1 for param, value in OPTIONS)
