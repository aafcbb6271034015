"""Group-shared prefill: `sample_fn(..., group_size=G)` prefills each prompt once for its G rows.

The result must be that of passing every prompt G times (same key): the same tokens, masks and
stop flags, and the same log-probs within float32 rounding of a different batch size.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rljax.models import Transformer, TransformerConfig, decode
from rljax.sampling import sampler as sampler_lib

G, NUM_PROMPTS, P, N = 3, 2, 6, 5


@pytest.fixture(scope='module')
def setup():
  cfg = TransformerConfig(vocab_size=11, d_model=16, num_layers=2, num_heads=2, num_kv_heads=1,
                          head_dim=8, ffn_dim=32, max_seq_len=16)
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(1)))
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, 11, size=(NUM_PROMPTS, P)).astype(np.int32)
  mask = np.ones((NUM_PROMPTS, P), np.int32)
  mask[1, :3] = 0  # a left-padded prompt
  prompts[1, :3] = 0
  return graphdef, params, prompts, mask


def _sample(graphdef, params, prompts, mask, group_size, **kw):
  return sampler_lib.sample_jit(graphdef, params, jnp.asarray(prompts), jnp.asarray(mask),
                                jax.random.key(7), max_new_tokens=N, stop_tokens=(2,),
                                group_size=group_size, **kw)


@pytest.mark.parametrize('top_k', [None, 4])
def test_shared_prefill_equals_repeated_prompts(setup, top_k):
  graphdef, params, prompts, mask = setup
  shared = _sample(graphdef, params, prompts, mask, G, top_k=top_k)
  repeated = _sample(graphdef, params, np.repeat(prompts, G, 0), np.repeat(mask, G, 0), 1,
                     top_k=top_k)
  assert shared.tokens.shape == (NUM_PROMPTS * G, P + N)
  for name in ('tokens', 'prompt_mask', 'completion_mask', 'lengths', 'stopped'):
    np.testing.assert_array_equal(getattr(shared, name), getattr(repeated, name), err_msg=name)
  for name in ('behavior_logp', 'untruncated_logp'):
    np.testing.assert_allclose(getattr(shared, name), getattr(repeated, name), atol=1e-6,
                               err_msg=name)
  # The G rows of a group are not copies of one another: they sample independently.
  assert len({tuple(r) for r in np.asarray(shared.tokens[:G])}) > 1


def test_prefill_runs_once_per_prompt(setup, monkeypatch):
  graphdef, params, prompts, mask = setup
  rows = []
  real = decode.prefill

  def counting(config, weights, tokens, *args, **kwargs):
    rows.append(tokens.shape[0])
    return real(config, weights, tokens, *args, **kwargs)

  monkeypatch.setattr(decode, 'prefill', counting)
  out = jax.eval_shape(lambda p: sampler_lib.sample_fn(
      graphdef, p, jnp.asarray(prompts), jnp.asarray(mask), jax.random.key(0),
      max_new_tokens=N, group_size=G), params)
  assert rows == [NUM_PROMPTS]
  assert out.tokens.shape == (NUM_PROMPTS * G, P + N)


@pytest.mark.parametrize('bad', [0, -2, 1.5])
def test_bad_group_size_is_refused(setup, bad):
  graphdef, params, prompts, mask = setup
  with pytest.raises(ValueError, match=f'group_size must be an int >= 1, got {bad!r}'):
    sampler_lib.sample(nnx.merge(graphdef, params), prompts, mask, jax.random.key(0),
                       max_new_tokens=N, group_size=bad)
