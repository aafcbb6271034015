"""`pip install rljax` (no extras) is enough for `import rljax` and every public estimator.

The test builds a fresh virtual environment, installs the checkout without extras (pip resolves
jax and numpy from the package index), and imports every public name; the harness packages
(flax, optax, orbax, tensorflow-datasets, ...) must not be installed by it. Marked `install`;
it runs in CI (about a minute, most of it pip).
"""

import json
import pathlib
import subprocess
import sys
import venv

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
HARNESS = ("flax", "optax", "orbax", "tensorflow_datasets", "array_record", "sentencepiece",
           "absl", "tensorboardX", "safetensors", "matplotlib", "chex")

_PROBE = """
import importlib.util, json, sys
import rljax
losses = sorted(n for n in dir(rljax) if n.endswith('_loss'))
import jax.numpy as jnp
out = rljax.reinforce_loss(jnp.zeros((2, 3)), jnp.ones((2,)), jnp.ones((2, 3)))
print(json.dumps(dict(
    file=rljax.__file__, losses=losses, loss=float(out.loss),
    installed=[m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None])))
"""


@pytest.mark.install
def test_bare_install_imports_every_estimator(tmp_path):
  env_dir = tmp_path / "bare"
  venv.EnvBuilder(with_pip=True).create(env_dir)
  python = env_dir / "bin" / "python"
  pip = subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)],
                       capture_output=True, text=True, check=False)
  assert pip.returncode == 0, pip.stdout + pip.stderr
  probe = subprocess.run([str(python), "-c", _PROBE, *HARNESS], capture_output=True,
                         text=True, check=False, cwd=tmp_path)
  assert probe.returncode == 0, probe.stderr
  result = json.loads(probe.stdout.strip().splitlines()[-1])
  assert str(env_dir) in result["file"], result["file"]  # the installed copy, not the checkout
  assert result["installed"] == [], f"the bare install pulled in {result['installed']}"
  assert {"ppo_clip_loss", "cispo_loss", "copg_loss", "topr_loss", "clip_cov_loss",
          "kl_cov_loss", "rec_loss", "opmd_loss", "asymre_loss"} <= set(result["losses"])
  assert result["loss"] == 0.0
