"""`--rollout_staleness=k`: RL batches come from the policy of k RL steps earlier.

The check records the parameters each step's sampler receives and compares them with the
policy before every step: step i must sample from the policy before step max(0, i - k), and the
behaviour log-probs it records are that sampler's (the trainer's re-scoring of them differs once
the policy has moved).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import config as config_lib
from experiments import rl as rl_lib
from experiments.train import Harness

BASE = dict(task_args='{"levels": [1], "ops": ["+"]}', d_model=16, num_layers=1, num_heads=2,
            ffn_dim=32, sft_steps=0, rl_steps=5, rl_pool_size=16, eval_num=4, num_prompts=4,
            group_size=2, num_epochs=1, num_minibatches=1, max_new_tokens=4,
            learning_rate=1e-2, console=False, tensorboard=False,
            # An untrained policy fails everywhere: TOPR's -1 rewards still move it.
            estimator='topr')


def _leaves(params):
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize('k', [0, 2])
def test_sampler_uses_the_policy_of_k_steps_ago(tmp_path, monkeypatch, k):
  h = Harness(config_lib.Config(rollout_staleness=k, **BASE), str(tmp_path))
  seen = []
  real = rl_lib.make_draw

  def recording(harness, params, arms, times):
    seen.append(_leaves(params))
    return real(harness, params, arms, times)

  monkeypatch.setattr(rl_lib, 'make_draw', recording)
  state = h._enter_rl(h.init_params)  # pylint: disable=protected-access
  assert len(state.get('stale', [])) == k
  before, gaps = [], []
  rl_key = jax.random.key(1)
  with jax.set_mesh(h.mesh):
    for i in range(5):
      before.append(_leaves(state['train'].params))
      state, m = rl_lib.rl_step(h, state, i, rl_key)
      gaps.append(m['logp_diff/trainer_sampler_max'])
  h.close()
  for i in range(5):
    assert _same(seen[i], before[max(0, i - k)]), (k, i)
  assert not _same(before[0], before[1])  # the policy moves, so the check can fail
  if k:
    assert not _same(seen[3], before[3])
    # Sampled by an older policy than the trainer's: the recorded log-probs are the sampler's.
    assert gaps[0] < 1e-4 and max(gaps[k:]) > 1e-3, gaps
  else:
    assert max(gaps) < 1e-4, gaps


def test_rollout_staleness_is_validated():
  with pytest.raises(ValueError, match='rollout_staleness'):
    config_lib.Config(rollout_staleness=-1).validate()
