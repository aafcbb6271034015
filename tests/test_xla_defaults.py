"""The launcher's default XLA flags: set only where the user has not set XLA_FLAGS."""

import os
import re
import subprocess
import sys

from experiments import xla_defaults

YNN = '--xla_cpu_experimental_ynn_fusion_type=dot,reduce'


def _env(**overrides):
  """The environment for a child Python that imports the repo; `overrides` (None: unset)."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [os.getcwd(), env.get('PYTHONPATH')]))
  for k, v in overrides.items():
    if v is None:
      env.pop(k, None)
    else:
      env[k] = v
  return env


def test_sets_the_ynn_fusion_when_xla_flags_is_unset(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  assert xla_defaults.apply()
  assert os.environ['XLA_FLAGS'] == YNN


def test_leaves_a_users_xla_flags_alone(monkeypatch):
  for value in ('--xla_force_host_platform_device_count=8', ''):
    monkeypatch.setenv('XLA_FLAGS', value)
    assert not xla_defaults.apply()
    assert os.environ['XLA_FLAGS'] == value


def test_the_launcher_applies_them_before_jax_is_imported():
  env = _env(XLA_FLAGS=None)
  code = ("import os, sys\n"
          "from experiments import xla_defaults\n"
          "real = xla_defaults.apply\n"
          "def spy():\n"
          "  print('jax imported first:', 'jax' in sys.modules)\n"
          "  return real()\n"
          "xla_defaults.apply = spy\n"
          "import experiments.launch\n"
          "print('XLA_FLAGS:', os.environ.get('XLA_FLAGS'))\n")
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       check=True, timeout=120).stdout
  assert 'jax imported first: False' in out
  assert f'XLA_FLAGS: {YNN}' in out


def _devices_after(code_before, xla_flags):
  """`jax.local_device_count()` in a fresh process that runs `code_before` first."""
  env = _env(XLA_FLAGS=xla_flags, JAX_PLATFORMS='cpu')
  code = ("from experiments import xla_defaults\n" + code_before +
          "import jax\nprint('devices:', jax.local_device_count())\n")
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       check=True, timeout=120).stdout
  return int(out.split('devices:')[1])


def test_set_cpu_devices_splits_the_host_over_xla_flags():
  eight = '--xla_force_host_platform_device_count=8'
  assert _devices_after("assert xla_defaults.set_cpu_devices(3)\n", eight) == 3
  assert _devices_after("assert xla_defaults.set_cpu_devices(2)\n", '') == 2
  # 0 (the flag's default) leaves JAX's own count: XLA_FLAGS', else one.
  assert _devices_after("assert not xla_defaults.set_cpu_devices(0)\n", eight) == 8
  assert _devices_after("assert not xla_defaults.set_cpu_devices(0)\n", '') == 1


def test_the_launcher_sets_cpu_devices_before_the_mesh_is_checked(tmp_path):
  # XLA_FLAGS asks for 8 devices; --cpu_devices=2 wins, so a 4-device mesh is refused, naming
  # both flags, before anything is built.
  env = _env(XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.launch', f'--workdir={tmp_path / "run"}',
       '--cpu_devices=2', '--mesh_data=4'], env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  fatal = [line for line in result.stderr.splitlines() if line.startswith('FATAL')]
  assert len(fatal) == 1, result.stderr[-2000:]
  assert re.search(r'--mesh_data=4 .* = 4 devices, but there are only 2 cpu devices '
                   r'\(on CPU, --cpu_devices=4 makes that many\)', fatal[0]), fatal[0]
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_a_harness_built_after_jax_started_refuses_a_cpu_devices_it_cannot_apply(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  from experiments.config import Config, FlagValueError  # pylint: disable=g-import-not-at-top
  n = jax.local_device_count()  # tests/conftest.py: 8
  with pytest.raises(FlagValueError, match=rf'--cpu_devices={n + 1}, but JAX started with {n} '
                     r'CPU devices.*set_cpu_devices'):
    train.Harness(Config(cpu_devices=n + 1), str(tmp_path))


def test_set_cpu_devices_after_jax_started_is_one_line_unless_the_count_matches():
  import jax  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  n = len(jax.devices('cpu'))  # started already (tests/conftest.py: 8)
  assert not xla_defaults.set_cpu_devices(n)  # nothing to change
  with pytest.raises(ValueError, match=rf'^cpu_devices={n + 1}: JAX has already started with '
                     rf'{n} CPU devices; set the count before anything touches a device$'):
    xla_defaults.set_cpu_devices(n + 1)


def test_the_mesh_hint_counts_cpu_devices_per_process(monkeypatch):
  # --cpu_devices is per process: 2 processes on a 16-device mesh need 8 each.
  import jax  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  from experiments.config import Config, FlagValueError  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(jax, 'device_count', lambda: 8)
  with pytest.raises(FlagValueError, match=r'= 16 devices, but there are only 8 cpu devices '
                     r'\(on CPU, --cpu_devices=8 makes that many per process\)'):
    train._check_devices(Config(mesh_data=16, num_prompts=32))  # pylint: disable=protected-access


def test_cpu_devices_beyond_the_mesh_are_reported_idle(caplog):
  import jax  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  from experiments.config import Config  # pylint: disable=g-import-not-at-top
  n = jax.local_device_count()  # tests/conftest.py: 8
  check = train._check_devices  # pylint: disable=protected-access
  with caplog.at_level('WARNING', logger='experiments.train'):
    check(Config(cpu_devices=n, mesh_data=2, num_prompts=4))
  assert f'--cpu_devices={n}, but the mesh' in caplog.text and 'uses 2 of them' in caplog.text
  caplog.clear()
  with caplog.at_level('WARNING', logger='experiments.train'):
    check(Config(cpu_devices=n, mesh_data=n, num_prompts=n))
  assert 'stay idle' not in caplog.text
