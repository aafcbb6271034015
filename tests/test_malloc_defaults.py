"""The opt-in glibc malloc options: a worker thread's large blocks reuse mapped pages."""

import os
import subprocess
import sys

import pytest

from experiments import malloc_defaults

_GLIBC = malloc_defaults._glibc() is not None  # pylint: disable=protected-access

# Allocates, writes and frees a 64 MiB block 4 times on a worker thread (as XLA:CPU's
# executions do) and prints the page faults of the last 3 rounds.
_ROUNDS = """
import ctypes, resource, sys, threading
from experiments import malloc_defaults
print('applied:', malloc_defaults.apply())
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
def rounds():
  for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
t = threading.Thread(target=rounds)
t.start(); t.join()
print('faults:', sum(faults[1:]))
"""


def _run(code, **env_changes):
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', malloc_defaults.ENV_VAR)}
  env.update(env_changes)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [os.getcwd(), env.get('PYTHONPATH')]))
  return subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                        check=True, timeout=120).stdout


def _value(out, key):
  return [line.split(': ', 1)[1] for line in out.splitlines() if line.startswith(key)][0]


@pytest.mark.skipif(not _GLIBC, reason='glibc only (the C library of the Linux CI machine)')
def test_a_worker_threads_large_blocks_reuse_their_pages():
  pages = (64 << 20) // os.sysconf('SC_PAGESIZE')
  with_options = _run(_ROUNDS, **{malloc_defaults.ENV_VAR: '1'})
  assert _value(with_options, 'applied') == 'True'
  assert int(_value(with_options, 'faults')) < pages // 10
  # glibc's defaults (the variable unset, so apply() leaves them): each round maps fresh pages.
  defaults = _run(_ROUNDS)
  assert _value(defaults, 'applied') == 'False'
  assert int(_value(defaults, 'faults')) > 2 * pages


def test_off_unless_asked_and_leaves_a_users_glibc_tunables_alone(monkeypatch):
  monkeypatch.delenv(malloc_defaults.ENV_VAR, raising=False)
  assert not malloc_defaults.apply()
  monkeypatch.setenv(malloc_defaults.ENV_VAR, '1')
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.arena_max=2')
  assert not malloc_defaults.apply()


def test_the_launcher_applies_them_before_jax_is_imported():
  code = ("import sys\n"
          "from experiments import malloc_defaults\n"
          "real = malloc_defaults.apply\n"
          "def spy():\n"
          "  print('jax imported first:', 'jax' in sys.modules)\n"
          "  print('applied:', real())\n"
          "  return True\n"
          "malloc_defaults.apply = spy\n"
          "import experiments.launch\n")
  out = _run(code, **{malloc_defaults.ENV_VAR: '1'})
  assert _value(out, 'jax imported first') == 'False'
  assert _value(out, 'applied') == str(_GLIBC)


def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch):
  monkeypatch.setenv(malloc_defaults.ENV_VAR, 'yes')
  with pytest.raises(ValueError, match="RLJAX_LARGE_BLOCK_MALLOC must be 0 or 1, got 'yes'"):
    malloc_defaults.apply()
  env = {k: v for k, v in os.environ.items()}
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [os.getcwd(), env.get('PYTHONPATH')]))
  run = subprocess.run([sys.executable, '-m', 'experiments.launch', '--workdir=/tmp/unused'],
                       env=env, capture_output=True, text=True, timeout=120)
  assert run.returncode != 0
  assert run.stderr.strip() == "FATAL RLJAX_LARGE_BLOCK_MALLOC must be 0 or 1, got 'yes'"
