"""The launcher's default XLA flags: set only where the user has not set XLA_FLAGS."""

import os
import subprocess
import sys

from experiments import xla_defaults

YNN = '--xla_cpu_experimental_ynn_fusion_type=dot,reduce'


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
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [os.getcwd(), env.get('PYTHONPATH')]))
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
