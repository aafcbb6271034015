"""Tests of rljax.train: the RL update, the SFT step, estimator presets, metrics and sharding.

Values are checked against quantities computed independently: log-probs from the model's
logits with `jax.nn.log_softmax` (not `rljax.models.score`), RLOO advantages and losses written
out in NumPy / plain jnp, and the 8-device data-parallel update against one device.
"""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rljax
from rljax.models import Transformer, TransformerConfig
from rljax.sampling.sampler import sample_fn
from rljax.train import estimators as est_lib
from rljax.train import mesh as mesh_lib
from rljax.train import train_step as ts
from rljax.train.batch import TrainBatch

G = 2            # completions per prompt
NUM_PROMPTS = 8
P, N = 3, 4      # prompt and completion widths
EOS = 2


def _model():
  cfg = TransformerConfig(vocab_size=12, d_model=16, num_layers=1, num_heads=2, num_kv_heads=2,
                          head_dim=8, ffn_dim=32, max_seq_len=16)
  return Transformer(cfg, rngs=nnx.Rngs(0))


@pytest.fixture(scope='module')
def setup():
  model = _model()
  graphdef, params = nnx.split(model)
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, 12, size=(NUM_PROMPTS, P)).astype(np.int32)
  pmask = np.ones((NUM_PROMPTS, P), np.int32)
  pmask[0, 0] = 0  # one left-padded prompt
  prompts[0, 0] = 0
  ids = np.repeat(prompts, G, axis=0)
  mask = np.repeat(pmask, G, axis=0)
  sample = jax.jit(lambda p, t, m, k: sample_fn(graphdef, p, t, m, k, max_new_tokens=N,
                                                temperature=1.0, stop_tokens=(EOS,)))(
                                                    params, ids, mask, jax.random.key(1))
  rewards = np.array([1, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0], np.float32)
  batch = TrainBatch.from_sample(sample, rewards, group_size=G)
  return graphdef, params, batch


def _independent_logp(graphdef, params, batch):
  """log p(tokens[t] | tokens[:t]) from the model's logits (no rljax.models.score)."""
  model = nnx.merge(graphdef, params)
  input_mask = np.maximum(np.asarray(batch.sample.prompt_mask), np.asarray(batch.sample.completion_mask))
  positions = np.maximum(np.cumsum(input_mask, axis=1) - 1, 0)
  logits = model(batch.sample.tokens, jnp.asarray(positions), jnp.asarray(input_mask))
  logp_all = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  lp = jnp.take_along_axis(logp_all, batch.sample.tokens[:, 1:, None], axis=-1)[..., 0]
  lp = jnp.pad(lp, ((0, 0), (1, 0)))
  return lp * batch.sample.completion_mask


def _sgd(lr):
  return optax.sgd(lr)


LR = 0.5
_UPDATES = {}


def _reinforce_update(graphdef, num_minibatches=1):
  """One compiled REINFORCE/RLOO update per mini-batch count, shared by the tests below."""
  key = num_minibatches
  if key not in _UPDATES:
    cfg = ts.LossConfig(estimator='reinforce', advantage='rloo',
                        aggregation='seq-mean-token-sum', track_ref_kl=True)
    _UPDATES[key] = ts.make_rl_update(graphdef, _sgd(LR), cfg, group_size=G,
                                      num_minibatches=num_minibatches, shuffle=False,
                                      donate=False)
  return _UPDATES[key]


def _sgd_state(params):
  return ts.TrainState(_copy(params), _sgd(LR).init(params), jnp.zeros((), jnp.int32))


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


def test_reinforce_rloo_update_equals_independent_gradient(setup):
  graphdef, params, batch = setup
  update = _reinforce_update(graphdef)
  new_state, metrics = update(_sgd_state(params), params, batch, jax.random.key(0))

  r = np.asarray(batch.rewards).reshape(-1, G)
  adv = (r - (r.sum(1, keepdims=True) - r) / (G - 1)).reshape(-1)  # leave-one-out baseline

  def loss(p):
    lp = _independent_logp(graphdef, p, batch)
    return -jnp.mean(jnp.asarray(adv) * jnp.sum(lp, axis=1))

  grads = jax.grad(loss)(params)
  expected = jax.tree.map(lambda p, g: p - LR * g, params, grads)
  for got, want in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  assert int(new_state.step) == 1
  np.testing.assert_allclose(metrics['loss/policy'], loss(params), rtol=1e-5, atol=1e-6)
  # One on-policy step: ratios are exactly 1 and the trainer reproduces the sampler.
  np.testing.assert_allclose(metrics['ratio/mean'], 1.0, atol=1e-6)
  assert metrics['logp_diff/trainer_sampler_max'] < 1e-5


def test_batch_metrics_match_numpy(setup):
  graphdef, params, batch = setup
  _, m = _reinforce_update(graphdef)(_sgd_state(params), params, batch, jax.random.key(0))
  r = np.asarray(batch.rewards)
  cm = np.asarray(batch.sample.completion_mask)
  np.testing.assert_allclose(m['reward_mean'], r.mean(), rtol=1e-6)
  np.testing.assert_allclose(m['reward_std'], r.std(), rtol=1e-6)
  np.testing.assert_allclose(m['response_length'], cm.sum(1).mean(), rtol=1e-6)
  np.testing.assert_allclose(m['truncation_rate'], 1 - np.asarray(batch.sample.stopped).mean(),
                             atol=1e-7)
  groups = r.reshape(-1, G)
  np.testing.assert_allclose(m['mixed_groups_frac'],
                             (groups.max(1) > groups.min(1)).mean(), atol=1e-7)
  # Policy = reference: KL exactly 0.
  np.testing.assert_allclose(m['kl_ref'], 0.0, atol=1e-7)
  # Entropy of the trainer's distributions at the completion tokens, from the logits.
  model = nnx.merge(graphdef, params)
  im = np.maximum(np.asarray(batch.sample.prompt_mask), cm)
  logits = model(batch.sample.tokens, jnp.asarray(np.maximum(np.cumsum(im, 1) - 1, 0)), jnp.asarray(im))
  p = jax.nn.softmax(logits[:, :-1], -1)
  ent = -jnp.sum(p * jnp.log(p), -1)
  want = float(jnp.sum(ent * cm[:, 1:]) / cm.sum())
  np.testing.assert_allclose(m['entropy'], want, rtol=1e-5)


def test_minibatches_are_sequential_optimizer_steps(setup):
  """2 mini-batches in one call == two calls, one per half (whole groups, in order)."""
  graphdef, params, batch = setup
  state = _sgd_state(params)
  combined, _ = _reinforce_update(graphdef, 2)(state, params, batch, jax.random.key(0))
  one = _reinforce_update(graphdef)
  half = batch.sample.tokens.shape[0] // 2
  first = jax.tree.map(lambda x: x[:half], batch)
  second = jax.tree.map(lambda x: x[half:], batch)
  s1, _ = one(state, params, first, jax.random.key(0))
  s2, _ = one(s1, params, second, jax.random.key(0))
  assert int(combined.step) == 2
  for a, b in zip(jax.tree.leaves(combined.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)


def _grpo_advantages(rewards):
  """GRPO advantages in NumPy: (r - group mean) / (unbiased group std + 1e-6), 0 if flat."""
  g = np.asarray(rewards, np.float64).reshape(-1, G)
  centred = g - g.mean(1, keepdims=True)
  std = np.sqrt((centred ** 2).sum(1, keepdims=True) / (G - 1))
  return np.where(std > 0, centred / (std + 1e-6), 0.0).reshape(-1).astype(np.float32)


def _ppo_reference(graphdef, params, batch, lr, steps, *, fixed_anchor):
  """PPO-clip (eps 0.2) SGD steps written out in plain jnp, one per row set in `steps`.

  The anchor is the log-probs of `params` (the policy before the first update) when
  `fixed_anchor`, else the log-probs of the parameters the step starts from. Returns the final
  parameters, each step's loss and each step's masked log-ratios to its anchor.
  """
  adv = jnp.asarray(_grpo_advantages(batch.rewards))
  mask = jnp.asarray(batch.sample.completion_mask, jnp.float32)
  pre_update_logp = _independent_logp(graphdef, params, batch)

  def loss(p, rows, anchor):
    lp = _independent_logp(graphdef, p, batch)[rows]
    m = mask[rows]
    ratio = jnp.exp((lp - anchor[rows]) * m)
    a = adv[rows, None]
    per_token = -jnp.minimum(ratio * a, jnp.clip(ratio, 0.8, 1.2) * a)
    return jnp.sum(per_token * m) / jnp.sum(m)

  losses, log_ratios = [], []
  for rows in steps:
    anchor = (pre_update_logp if fixed_anchor else
              jax.lax.stop_gradient(_independent_logp(graphdef, params, batch)))
    value, grads = jax.value_and_grad(loss)(params, rows, anchor)
    d = (_independent_logp(graphdef, params, batch) - anchor)[rows]
    log_ratios.append(np.asarray(d)[np.asarray(mask[rows]) > 0])
    losses.append(float(value))
    params = jax.tree.map(lambda x, g: x - lr * g, params, grads)
  return params, losses, log_ratios


@pytest.mark.parametrize('num_epochs,num_minibatches', [(2, 1), (2, 2)])
def test_ppo_epochs_use_the_pre_update_anchor(setup, num_epochs, num_minibatches):
  """Every optimizer step of one RL update clips against the log-probs of the parameters as
  they were before the first step, not those of the parameters the step starts from.

  The update is replayed independently twice (log-probs from the model's logits, the PPO
  surrogate and SGD written out): once with the pre-update anchor, once re-anchored at every
  step. The update's parameters, mean loss and ratio extremes equal the first replay and differ
  from the second.
  """
  graphdef, params, batch = setup
  lr = 1.0
  cfg = ts.LossConfig(estimator='grpo', track_ref_kl=False)
  tx = optax.sgd(lr)
  update = ts.make_rl_update(graphdef, tx, cfg, group_size=G, num_epochs=num_epochs,
                             num_minibatches=num_minibatches, shuffle=False, donate=False)
  state = ts.TrainState(_copy(params), tx.init(params), jnp.zeros((), jnp.int32))
  new, m = update(state, None, batch, jax.random.key(0))
  assert int(new.step) == num_epochs * num_minibatches

  # Unshuffled mini-batches: consecutive runs of whole groups, the same order every epoch.
  b = batch.sample.tokens.shape[0]
  steps = np.split(np.arange(b), num_minibatches) * num_epochs
  want, want_losses, want_d = _ppo_reference(graphdef, params, batch, lr, steps,
                                             fixed_anchor=True)
  alt, alt_losses, alt_d = _ppo_reference(graphdef, params, batch, lr, steps,
                                          fixed_anchor=False)

  # The first step starts at the anchor in both replays; after it the policy has moved, so
  # the two anchors differ and so do the later steps.
  np.testing.assert_allclose(want_losses[0], alt_losses[0], rtol=1e-6)
  assert np.max(np.abs(np.concatenate(want_d[1:]))) > 1e-2
  np.testing.assert_allclose(np.concatenate(alt_d), 0.0, atol=1e-6)

  np.testing.assert_allclose(m['loss/policy'], np.mean(want_losses), rtol=1e-5, atol=1e-6)
  assert abs(np.mean(want_losses) - np.mean(alt_losses)) > 1e-3
  d = np.concatenate(want_d)
  np.testing.assert_allclose(m['ratio/max'], np.exp(d.max()), rtol=1e-5)
  np.testing.assert_allclose(m['ratio/min'], np.exp(d.min()), rtol=1e-5)
  gap = max(float(np.max(np.abs(a - b)))
            for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(alt)))
  assert gap > 1e-3, gap
  for got, expected in zip(jax.tree.leaves(new.params), jax.tree.leaves(want)):
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('name', sorted(est_lib.ESTIMATORS))
def test_every_registry_keyword_is_in_its_loss_signature(name):
  """Inputs, presets, flag keywords and shared options all name parameters of the loss."""
  spec = est_lib.get_estimator(name)
  params = inspect.signature(spec.loss).parameters
  positional = list(params)[:len(spec.inputs)]
  # Inputs name the loss's leading parameters; TOPR's rewards arrive as the signed advantages.
  assert [i if (i, p) != ('advantages', 'rewards') else p
          for i, p in zip(spec.inputs, positional)] == positional, name
  named = list(spec.presets) + [f.keyword for f in spec.flags]
  assert [k for k in named if k not in params or k in positional] == [], name
  assert set(spec.keywords) == set(params) - set(positional), name
  for f in spec.flags:  # a flag sets an option of the loss, never one of its array inputs
    assert f.keyword not in spec.inputs, (name, f.name)
  if spec.aggregation is not None:
    assert 'aggregation' in params, name
  if spec.alias_of is not None:
    assert est_lib.get_estimator(spec.alias_of).loss is spec.loss, name


@pytest.mark.parametrize('name', sorted(est_lib.ESTIMATORS))
def test_every_estimator_preset_calls_its_loss(name):
  """Each preset reaches its rljax loss with the right arrays: finite loss, gradient in logp.

  (Without the model, so that the 14 presets cost no compilation; the full update path is
  covered by the grpo/reinforce tests above and by tests/test_launch.py.)
  """
  spec = est_lib.get_estimator(name)
  cfg = ts.LossConfig(estimator=name)
  rng = np.random.default_rng(1)
  b, t = 8, 5
  mask = (rng.random((b, t)) < 0.8).astype(np.float32)
  mask[:, 0] = 1.0
  old = jnp.asarray(np.log(rng.uniform(0.2, 0.9, (b, t))) * mask, jnp.float32)
  rewards = jnp.asarray(rng.integers(0, 2, b), jnp.float32)
  adv = est_lib.compute_advantages(rewards, G, cfg.advantage_mode)
  kwargs = cfg.estimator_kwargs(t)

  def loss(logp):
    x = est_lib.LossInputs(logp=logp, old_logp=old, behavior_logp=old, ref_logp=old - 0.1,
                           advantages=adv, rewards=rewards, mask=jnp.asarray(mask),
                           key=jax.random.key(0), group_size=G)
    return spec(x, kwargs).loss

  # At the anchor (ratio 1): inside every clip range, GSPO's 3e-4 included.
  logp = old
  value, grad = jax.value_and_grad(loss)(logp)
  assert np.isfinite(float(value)), name
  assert np.all(np.isfinite(np.asarray(grad))), name
  assert float(jnp.sum(jnp.abs(grad))) > 0, name
  np.testing.assert_array_equal(np.asarray(grad)[mask == 0], 0.0)
  if spec.presets.get('level') == 'sequence':
    assert name == 'gspo'


def test_sft_step_minimises_demonstration_nll(setup):
  graphdef, params, batch = setup
  lr = 0.2
  step = ts.make_sft_step(graphdef, optax.sgd(lr), donate=False)
  target = batch.sample.completion_mask
  input_mask = batch.sample.input_mask
  state = ts.TrainState(_copy(params), optax.sgd(lr).init(params), jnp.zeros((), jnp.int32))
  new, m = step(state, batch.sample.tokens, input_mask, target)

  def nll(p):
    lp = _independent_logp(graphdef, p, batch)
    return -jnp.sum(lp) / jnp.sum(target)

  np.testing.assert_allclose(m['sft/nll'], nll(params), rtol=1e-5)
  grads = jax.grad(nll)(params)
  for got, p, g in zip(jax.tree.leaves(new.params), jax.tree.leaves(params),
                       jax.tree.leaves(grads)):
    np.testing.assert_allclose(got, p - lr * g, atol=1e-5, rtol=1e-5)


def test_data_parallel_8_devices_equals_one_device(setup):
  """Two RL updates with the batch split over data=8 give the 1-device parameters (1e-5)."""
  assert jax.device_count() >= 8, 'tests/conftest.py sets 8 host devices'
  graphdef, params, batch = setup
  cfg = ts.LossConfig(estimator='grpo', kl_coef=0.05)
  opt = ts.OptimizerConfig(learning_rate=1e-2, warmup_steps=1, schedule='cosine',
                           decay_steps=8, max_grad_norm=1.0)
  results = []
  for mesh in (mesh_lib.make_mesh(devices=jax.devices()[:1]), mesh_lib.make_mesh(data=8)):
    tx = ts.make_optimizer(opt)
    update = ts.make_rl_update(graphdef, tx, cfg, group_size=G, num_epochs=2,
                               num_minibatches=2, donate=False)
    with jax.set_mesh(mesh):
      p = jax.device_put(_copy(params), mesh_lib.param_shardings(params, mesh))
      state = ts.init_train_state(p, tx, mesh)
      ref = jax.device_put(_copy(params), mesh_lib.param_shardings(params, mesh))
      sharded = mesh_lib.shard_batch(batch, mesh)
      if mesh.size == 8:
        assert sharded.sample.tokens.sharding.spec == mesh_lib.batch_spec(2)
        assert len(sharded.sample.tokens.addressable_shards) == 8
      for i in range(2):
        state, metrics = update(state, ref, sharded, jax.random.key(i))
    results.append((jax.device_get(state.params), jax.device_get(metrics)))
  (p1, m1), (p8, m8) = results
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  for k in m1:
    np.testing.assert_allclose(m1[k], m8[k], atol=1e-5, rtol=1e-4, err_msg=k)


def test_loss_config_validation_names_the_field():
  with pytest.raises(ValueError, match='estimator must be one of'):
    ts.LossConfig(estimator='nope')
  with pytest.raises(ValueError, match='advantage must be one of'):
    ts.LossConfig(advantage='bogus')
  with pytest.raises(ValueError, match='aggregation must be one of'):
    ts.LossConfig(aggregation='mean')
  with pytest.raises(ValueError, match='kl_estimator'):
    ts.LossConfig(kl_estimator='k9')
  with pytest.raises(ValueError, match='optimizer must be one of'):
    ts.OptimizerConfig(optimizer='rmsprop')


def test_is_correction_rejected_for_raw_reward_estimators(setup):
  graphdef, _, _ = setup
  cfg = ts.LossConfig(estimator='topr', is_correction='tis')
  with pytest.raises(ValueError, match='is_correction'):
    ts.make_rl_update(graphdef, optax.sgd(0.1), cfg, group_size=G)


def test_group_not_dividing_minibatches_fails(setup):
  graphdef, params, batch = setup
  update = ts.make_rl_update(graphdef, optax.sgd(0.1), ts.LossConfig(estimator='reinforce'),
                             group_size=G, num_minibatches=3, donate=False)
  state = ts.TrainState(params, optax.sgd(0.1).init(params), jnp.zeros((), jnp.int32))
  with pytest.raises(ValueError, match='num_minibatches=3'):
    update(state, params, batch, jax.random.key(0))


def test_advantage_modes_match_numpy():
  r = np.array([1., 0., 0., 0., 1., 1., 0.5, 0.], np.float32)
  g = r.reshape(-1, 2)
  centred = g - g.mean(1, keepdims=True)
  std = np.sqrt((centred ** 2).sum(1, keepdims=True) / (2 - 1))
  want_group = np.where(std > 0, centred / (std + 1e-6), 0.0).reshape(-1)
  np.testing.assert_allclose(est_lib.compute_advantages(jnp.asarray(r), 2, 'group'),
                             want_group, atol=1e-6)
  np.testing.assert_allclose(est_lib.compute_advantages(jnp.asarray(r), 2, 'group-none'),
                             centred.reshape(-1), atol=1e-7)
  # TRL's scale_rewards='batch': the group-centred reward over the (n-1) std of the raw rewards
  # of the whole batch (group means included), plus 1e-6.
  raw_std = np.sqrt(((r - r.mean()) ** 2).sum() / (r.size - 1))
  want_raw = (centred / (raw_std + 1e-6)).reshape(-1)
  got_raw = est_lib.compute_advantages(jnp.asarray(r), 2, 'group-batch-raw-std')
  np.testing.assert_allclose(got_raw, want_raw, rtol=1e-6, atol=1e-7)
  # The std of the centred rewards ('group-batch-std') is a different estimator on this batch.
  centred_std = np.sqrt((centred ** 2).sum() / (r.size - 1))
  assert abs(raw_std - centred_std) > 0.1
  np.testing.assert_allclose(est_lib.compute_advantages(jnp.asarray(r), 2, 'group-batch-std'),
                             (centred / (centred_std + 1e-6)).reshape(-1), rtol=1e-6, atol=1e-7)
  loo = (g - (g.sum(1, keepdims=True) - g) / 1.0).reshape(-1)
  np.testing.assert_allclose(est_lib.compute_advantages(jnp.asarray(r), 2, 'rloo'), loo,
                             atol=1e-7)
  np.testing.assert_allclose(est_lib.compute_advantages(jnp.asarray(r), 2, 'raw'), r)
  # TOPR's +-1 rewards: a failure (0) is -1, a success (1) is +1.
  np.testing.assert_allclose(est_lib.compute_advantages(jnp.asarray(r), 2, 'signed'),
                             [1., -1., -1., -1., 1., 1., 0., -1.])


def test_schedule_warmup_then_cosine():
  sched = ts.make_schedule(ts.OptimizerConfig(learning_rate=1.0, warmup_steps=4,
                                              schedule='cosine', decay_steps=10,
                                              end_lr_factor=0.1))
  np.testing.assert_allclose([sched(0), sched(2), sched(4)], [0.0, 0.5, 1.0], atol=1e-6)
  np.testing.assert_allclose(sched(14), 0.1, atol=1e-6)
  np.testing.assert_allclose(sched(9), 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 5 / 10)),
                             atol=1e-6)


def test_rollout_from_sample_validates(setup):
  _, _, batch = setup
  with pytest.raises(ValueError, match='group_size=3'):
    TrainBatch.from_sample(batch.sample, batch.rewards, group_size=3)
  with pytest.raises(ValueError, match='rewards must have shape'):
    TrainBatch.from_sample(batch.sample, batch.rewards[:4], group_size=G)
  np.testing.assert_array_equal(batch.group_ids, np.arange(16) // G)
