"""The RL update runs no wasted passes: counted forward passes and logit shapes in its trace.

* Used once (one epoch, one mini-batch, trainer anchor), the batch is scored by the
  differentiated pass alone; the anchor, entropy, sampler gap and IS weights come from it.
* The reference is scored only when a KL term or `track_ref_kl` needs it.
* The output projection sees the N completion columns only, never the prompt.
* When the G rows of each group share their prompt, every pass runs the prompt once per group
  (and gives the update of the rows run separately); otherwise every row runs in full.

Losses and gradients are checked against a plain log-softmax of the model's logits and the
library's estimator loss (not the update's code).
"""

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rljax
from rljax.models import Transformer, TransformerConfig, kernels, score
from rljax.sampling.sampler import sample_fn
from rljax.train import estimators as est_lib
from rljax.train import train_step as ts
from rljax.train.batch import TrainBatch

G, NUM_PROMPTS, P, N = 2, 3, 5, 4
V, D = 13, 16      # vocabulary and width, distinct from every other dimension
LR = 0.5


@pytest.fixture(scope='module')
def setup():
  cfg = TransformerConfig(vocab_size=V, d_model=D, num_layers=1, num_heads=2, num_kv_heads=2,
                          head_dim=8, ffn_dim=32, max_seq_len=16)
  graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, V, size=(NUM_PROMPTS, P)).astype(np.int32)
  pmask = np.ones((NUM_PROMPTS, P), np.int32)
  pmask[0, :2] = 0  # one left-padded prompt
  ids, mask = np.repeat(prompts, G, 0), np.repeat(pmask, G, 0)
  # top_k makes the behaviour log-probs differ from the trainer's, so IS weights are not 1.
  sample = jax.jit(lambda p, t, m, k: sample_fn(graphdef, p, t, m, k, max_new_tokens=N,
                                                top_k=4, stop_tokens=(2,)))(
                                                    params, ids, mask, jax.random.key(3))
  rewards = np.array([1, 0, 0, 1, 1, 1], np.float32)
  return graphdef, params, TrainBatch.from_sample(sample, rewards, group_size=G)


def _state(params):
  return ts.TrainState(jax.tree.map(jnp.copy, params), optax.sgd(LR).init(params),
                       jnp.zeros((), jnp.int32))


def _update(graphdef, cfg, **kw):
  return ts.make_rl_update(graphdef, optax.sgd(LR), cfg, group_size=G, max_new_tokens=N,
                           shuffle=False, donate=False, **kw)


def _eqns(jaxpr):
  """Every equation of `jaxpr` and of the jaxprs nested in it (jit, scan, remat, vjp)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (tuple, list)) else (v,)):
        inner = getattr(sub, 'jaxpr', sub)
        if isinstance(inner, jax_core.Jaxpr):
          yield from _eqns(inner)


def _traced(update, params, ref_params, batch):
  return jax.make_jaxpr(update)(_state(params), ref_params, batch, jax.random.key(0)).jaxpr


def _projection_shapes(jaxpr):
  """Shapes of the vocabulary-sized operands / results of every dot_general (B x T x V)."""
  shapes = []
  for eqn in _eqns(jaxpr):
    if eqn.primitive.name == 'dot_general':
      for var in list(eqn.invars) + list(eqn.outvars):
        shape = var.aval.shape
        if len(shape) == 3 and shape[-1] == V:
          shapes.append(shape)
  return shapes


def _forward_projections(jaxpr):
  """Number of dot_generals computing logits `[B, T, V]` from hidden `[B, T, D]`."""
  return sum(1 for eqn in _eqns(jaxpr) if eqn.primitive.name == 'dot_general'
             and eqn.outvars[0].aval.shape[-1:] == (V,) and eqn.invars[0].aval.shape[-1] == D)


def _count_score_calls(monkeypatch):
  calls = []
  real = ts.score_fn

  def counting(*args, **kwargs):
    calls.append(kwargs.get('completion_width'))
    return real(*args, **kwargs)

  monkeypatch.setattr(ts, 'score_fn', counting)
  return calls


@pytest.mark.parametrize('num_epochs,num_minibatches,old_logp,track,expected', [
    (1, 1, 'trainer', False, 1),   # the differentiated pass only
    (1, 1, 'trainer', True, 2),    # + the reference, asked for by track_ref_kl
    (1, 1, 'sampler', False, 2),   # the trainer's own pass still gives entropy and the gap
    (2, 1, 'trainer', False, 2),   # the anchor must outlive the first step: scored beforehand
    (1, 3, 'trainer', False, 2),
])
def test_score_passes_per_update(setup, monkeypatch, num_epochs, num_minibatches, old_logp,
                                 track, expected):
  graphdef, params, batch = setup
  calls = _count_score_calls(monkeypatch)
  cfg = ts.LossConfig(estimator='grpo', old_logp=old_logp, track_ref_kl=track)
  update = _update(graphdef, cfg, num_epochs=num_epochs, num_minibatches=num_minibatches)
  # No reference parameters at all when the update must not score the reference.
  jaxpr = _traced(update, params, params if track else None, batch)
  assert len(calls) == expected
  assert calls == [N] * expected  # every pass projects the completion columns only
  assert _forward_projections(jaxpr) == expected


def test_kl_term_scores_the_reference(setup, monkeypatch):
  graphdef, params, batch = setup
  calls = _count_score_calls(monkeypatch)
  _traced(_update(graphdef, ts.LossConfig(estimator='grpo', kl_coef=0.1)), params, params, batch)
  assert len(calls) == 2
  assert not ts.LossConfig(estimator='grpo').uses_ref


def test_logits_only_at_completion_columns(setup):
  graphdef, params, batch = setup
  cfg = ts.LossConfig(estimator='grpo', entropy_coef=0.01)
  shapes = _projection_shapes(_traced(_update(graphdef, cfg), params, None, batch))
  assert shapes and set(shapes) == {(G * NUM_PROMPTS, N, V)}
  # Without the completion width every position but the last is projected.
  full = ts.make_rl_update(graphdef, optax.sgd(LR), cfg, group_size=G, donate=False)
  assert set(_projection_shapes(_traced(full, params, None, batch))) == {
      (G * NUM_PROMPTS, P + N - 1, V)}


def _plain_logp(graphdef, params, batch):
  """log p(tokens[t] | tokens[:t]) by log_softmax of the model's logits, on the completion."""
  sample = batch.sample
  im = jnp.maximum(sample.prompt_mask, sample.completion_mask)
  logits = nnx.merge(graphdef, params)(sample.tokens, sample.positions, im)
  lp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  lp = jnp.take_along_axis(lp, sample.tokens[:, 1:, None], axis=-1)[..., 0]
  return jnp.pad(lp, ((0, 0), (1, 0))) * sample.completion_mask


def test_single_pass_loss_and_gradient_with_is_weights(setup):
  graphdef, params, batch = setup
  cfg = ts.LossConfig(estimator='grpo', is_correction='tis', is_cap=1.2)
  new_state, m = _update(graphdef, cfg)(_state(params), None, batch, jax.random.key(0))
  sample = batch.sample
  mask = sample.completion_mask.astype(jnp.float32)
  adv = est_lib.compute_advantages(batch.rewards, G, cfg.advantage_mode)

  def loss(p):
    lp = _plain_logp(graphdef, p, batch)
    anchor = jax.lax.stop_gradient(lp)
    w = rljax.truncated_is_weights(sample.behavior_logp, anchor, mask, cap=1.2).weights
    x = est_lib.LossInputs(logp=lp, old_logp=anchor, behavior_logp=sample.behavior_logp,
                           ref_logp=jnp.zeros_like(lp), advantages=adv, rewards=batch.rewards,
                           mask=mask, key=None, group_size=G, is_weights=w)
    return cfg.spec(x, cfg.estimator_kwargs(N)).loss, w

  (want_loss, w), grads = jax.value_and_grad(loss, has_aux=True)(params)
  assert float(jnp.min(jnp.where(mask > 0, w, 9.0))) < 1.0  # the weights are in play
  np.testing.assert_allclose(m['loss/policy'], want_loss, rtol=1e-5, atol=1e-6)
  want = jax.tree.map(lambda p, g: p - LR * g, params, grads)
  for got, exp in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(want)):
    np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-5)
  lp = _plain_logp(graphdef, params, batch)
  gap = np.abs(np.asarray(lp - sample.untruncated_logp))[np.asarray(mask) > 0]
  np.testing.assert_allclose(m['logp_diff/trainer_sampler_max'], gap.max(), atol=1e-6)
  np.testing.assert_allclose(m['ratio/mean'], 1.0, atol=1e-7)


def test_score_completion_width_equals_full_scoring(setup):
  graphdef, params, batch = setup
  model = nnx.merge(graphdef, params)
  s = batch.sample
  full = score(model, s.tokens, s.input_mask, s.completion_mask, return_entropy=True)
  part = score(model, s.tokens, s.input_mask, s.completion_mask, return_entropy=True,
               completion_width=N)
  for a, b in zip(full, part):
    np.testing.assert_allclose(a, b, atol=1e-6)
  with pytest.raises(ValueError, match='completion_width=99'):
    score(model, s.tokens, s.input_mask, s.completion_mask, completion_width=99)


def test_update_refuses_completion_tokens_before_the_completion_columns(setup):
  graphdef, params, batch = setup
  cm = batch.sample.completion_mask.at[0, P - 1].set(1)
  bad = batch.replace(sample=batch.sample.replace(completion_mask=cm))
  update = _update(graphdef, ts.LossConfig(estimator='grpo'))
  with pytest.raises(ValueError, match=f'max_new_tokens={N}: the batch has completion tokens'):
    update(_state(params), None, bad, jax.random.key(0))


def _count_shared_prompt_passes(monkeypatch):
  """Records the prompt-stream shape of every traced `shared_prompt_hidden_states` call."""
  calls = []
  real = kernels.shared_prompt_hidden_states

  def counting(model, tokens, input_mask, **kwargs):
    calls.append((tokens.shape, kwargs['group_size']))
    return real(model, tokens, input_mask, **kwargs)

  monkeypatch.setattr(kernels, 'shared_prompt_hidden_states', counting)
  return calls


@pytest.mark.parametrize('num_epochs,num_minibatches,kl_coef,expected', [
    (1, 1, 0.0, 1),   # the differentiated pass
    (1, 1, 0.1, 2),   # + the reference
    (2, 1, 0.0, 2),   # the anchor's pass + the loss pass (traced once inside the scan)
    (1, 3, 0.0, 2),   # mini-batches of one group each still share their prompt
])
def test_groups_sharing_a_prompt_run_it_once(setup, monkeypatch, num_epochs, num_minibatches,
                                             kl_coef, expected):
  graphdef, params, batch = setup
  calls = _count_shared_prompt_passes(monkeypatch)
  cfg = ts.LossConfig(estimator='grpo', kl_coef=kl_coef)
  kw = dict(num_epochs=num_epochs, num_minibatches=num_minibatches)
  ref = params if kl_coef else None
  state, m = _update(graphdef, cfg, **kw)(_state(params), ref, batch, jax.random.key(0))
  assert len(calls) == expected
  assert all(shape[0] in (G * NUM_PROMPTS, G) and group == G for shape, group in calls)
  # Every row run separately gives the same update.
  plain_state, plain_m = _update(graphdef, cfg, share_prompts=False, **kw)(
      _state(params), ref, batch, jax.random.key(0))
  assert len(calls) == expected
  for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(plain_state.params)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for name in ('loss/policy', 'entropy', 'logp_diff/trainer_sampler_max', 'grad_norm'):
    np.testing.assert_allclose(m[name], plain_m[name], rtol=1e-4, atol=1e-6)


def test_groups_with_different_prompts_run_every_row(setup, monkeypatch):
  graphdef, params, batch = setup
  calls = _count_shared_prompt_passes(monkeypatch)
  # Row 1's prompt differs from row 0's (same group) in one token; row 3's in its mask.
  tokens = batch.sample.tokens.at[1, P - 1].add(1)
  pm = batch.sample.prompt_mask.at[3, 0].set(1 - batch.sample.prompt_mask[3, 0])
  for sample in (batch.sample.replace(tokens=tokens), batch.sample.replace(prompt_mask=pm)):
    _update(graphdef, ts.LossConfig(estimator='grpo'))(
        _state(params), None, batch.replace(sample=sample), jax.random.key(0))
  assert not calls
