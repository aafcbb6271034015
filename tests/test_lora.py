"""Tests of LoRA (`rljax.models.lora`) and of the train steps on adapters (`combine=`).

The merge is checked against NumPy; one SGD step on the adapters against the full fine-tuning
gradient (with B = 0, `dB = s A^T G^T` and `dA = 0`, where G is the gradient of the merged
weight); LoRA rank r against full fine-tuning on a teacher whose change is rank r; the optimizer
state against the parameter counts. The launcher's `--lora_rank` run is in tests/test_export.py.
"""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rljax.models import Transformer, TransformerConfig
from rljax.models import lora
from rljax.train import train_step as ts
from rljax.train.batch import TrainBatch

CFG = TransformerConfig(vocab_size=16, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1,
                        head_dim=8, ffn_dim=24, max_seq_len=16)
# (module path, out, in) of every projection of CFG, written out by hand.
PROJ = {'layers/0/self_attn/q_proj': (16, 16), 'layers/0/self_attn/k_proj': (8, 16),
        'layers/0/self_attn/v_proj': (8, 16), 'layers/0/self_attn/o_proj': (16, 16),
        'layers/0/mlp/gate_proj': (24, 16), 'layers/0/mlp/up_proj': (24, 16),
        'layers/0/mlp/down_proj': (16, 24)}


def _model(seed=0):
  return Transformer(CFG, rngs=nnx.Rngs(seed))


def _get(state, path):
  node = state
  for k in path.split('/'):
    node = node[int(k) if k.isdigit() else k]
  return np.asarray(node[...])


def _random_adapters(adapters, seed):
  """The adapters with every leaf redrawn (B nonzero), for merge checks."""
  leaves, tree = jax.tree.flatten(adapters)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def test_adapters_cover_the_default_targets_with_the_right_shapes():
  adapters = lora.init_adapters(_model(), lora.LoraConfig(rank=3))
  for path, (out_f, in_f) in PROJ.items():
    assert _get(adapters, path + '/lora_a').shape == (in_f, 3)
    assert _get(adapters, path + '/lora_b').shape == (3, out_f)
    np.testing.assert_array_equal(_get(adapters, path + '/lora_b'), 0.0)
  assert lora.num_params(adapters) == sum(3 * (o + i) for o, i in PROJ.values())
  assert 'lm_head' not in adapters


def test_merge_is_w_plus_scaled_ab_transposed_and_leaves_the_rest():
  model = _model()
  frozen = nnx.state(model, nnx.Param)
  cfg = lora.LoraConfig(rank=2, alpha=5.0, targets='q_proj,down_proj')
  adapters = _random_adapters(lora.init_adapters(model, cfg), seed=1)
  merged = jax.jit(lambda a, f: lora.merge(a, f, scale=cfg.scale))(adapters, frozen)
  for path in PROJ:
    w = _get(frozen, path + '/weight')
    got = _get(merged, path + '/weight')
    if path.endswith(('q_proj', 'down_proj')):
      a, b = _get(adapters, path + '/lora_a'), _get(adapters, path + '/lora_b')
      np.testing.assert_allclose(got, w + 2.5 * (a @ b).T, rtol=1e-5, atol=1e-5)
    else:
      np.testing.assert_array_equal(got, w)
  np.testing.assert_array_equal(_get(merged, 'embed_tokens/weight'),
                                _get(frozen, 'embed_tokens/weight'))


def test_targets_by_name_by_regex_and_errors():
  model = _model()
  assert lora.target_paths(model, 'v_proj, up_proj') == ['layers/0/mlp/up_proj',
                                                         'layers/0/self_attn/v_proj']
  assert lora.target_paths(model, r'layers/0/self_attn/[qk]_proj') == [
      'layers/0/self_attn/k_proj', 'layers/0/self_attn/q_proj']
  assert lora.target_paths(model, 'lm_head') == ['lm_head']
  with pytest.raises(ValueError, match=r"'wq' match no linear module.*'q_proj'"):
    lora.target_paths(model, 'wq')
  with pytest.raises(ValueError, match='regular expression'):
    lora.LoraConfig(rank=2, targets='layers/(')
  with pytest.raises(ValueError, match='rank must be an integer >= 1'):
    lora.LoraConfig(rank=0)


def test_merge_rejects_adapters_of_another_model():
  adapters = lora.init_adapters(_model(), lora.LoraConfig(rank=2))
  other = TransformerConfig(vocab_size=16, d_model=8, num_layers=1, num_heads=1,
                            num_kv_heads=1, head_dim=8, ffn_dim=24)
  frozen = nnx.state(Transformer(other, rngs=nnx.Rngs(0)), nnx.Param)
  with pytest.raises(ValueError, match='the adapter of layers/0/.* weight, the model has'):
    lora.merge(adapters, frozen, scale=1.0)


def _sft_data(seed=0):
  tokens = jax.random.randint(jax.random.key(seed), (4, 8), 0, CFG.vocab_size)
  input_mask = jnp.ones((4, 8), jnp.int32)
  target = input_mask.at[:, :3].set(0)
  return tokens, input_mask, target


def _check_one_sgd_step(full_before, full_after, lora_before, lora_after, lr, scale):
  """With B = 0: A unchanged, B_1 = -lr * s * A^T G^T with G = (W_0 - W_1) / lr (full FT)."""
  for path in PROJ:
    grad_w = (_get(full_before, path + '/weight') - _get(full_after, path + '/weight')) / lr
    a = _get(lora_before, path + '/lora_a')
    np.testing.assert_array_equal(_get(lora_after, path + '/lora_a'), a)
    want_b = -lr * scale * a.T @ grad_w.T
    size = np.abs(want_b).max()
    assert size > 1e-6  # a step that moves B
    np.testing.assert_allclose(_get(lora_after, path + '/lora_b'), want_b, rtol=1e-3,
                               atol=1e-3 * size)


def test_sft_step_on_adapters_is_the_full_gradient_projected():
  model = _model()
  graphdef, frozen = nnx.split(model)
  cfg = lora.LoraConfig(rank=2, alpha=3.0)
  adapters = lora.init_adapters(model, cfg, seed=4)
  lr = 10.0  # one SGD step: large, so that W_0 - W_1 keeps G's digits
  tx = optax.sgd(lr)
  data = _sft_data()
  full_step = ts.make_sft_step(graphdef, tx, donate=False)
  full, _ = full_step(ts.init_train_state(frozen, tx), *data)
  combine = lambda p, f: lora.merge(p, f, scale=cfg.scale)
  lora_step = ts.make_sft_step(graphdef, tx, donate=False, combine=combine)
  state, metrics = lora_step(ts.init_train_state(adapters, tx), *data, frozen=frozen)
  _check_one_sgd_step(frozen, full.params, adapters, state.params, lr, cfg.scale)
  assert np.isfinite(metrics['sft/nll'])


def _rl_batch():
  b, length, p = 4, 8, 3
  tokens = jax.random.randint(jax.random.key(1), (b, length), 0, CFG.vocab_size)
  prompt = jnp.zeros((b, length), jnp.int32).at[:, :p].set(1)
  completion = 1 - prompt
  sample = types.SimpleNamespace(
      tokens=tokens, prompt_mask=prompt, completion_mask=completion,
      behavior_logp=jnp.full((b, length), -2.0) * completion,
      lengths=jnp.full((b,), length - p), stopped=jnp.ones((b,), bool))
  return TrainBatch.from_sample(sample, jnp.array([1.0, 0.0, 0.0, 1.0]), group_size=2)


def test_rl_update_on_adapters_is_the_full_gradient_projected_and_ref_is_the_base():
  model = _model()
  graphdef, frozen = nnx.split(model)
  cfg = lora.LoraConfig(rank=2, alpha=3.0)
  adapters = lora.init_adapters(model, cfg, seed=5)
  lr = 10.0  # one SGD step: large, so that W_0 - W_1 keeps G's digits
  tx = optax.sgd(lr)
  loss_cfg = ts.LossConfig(estimator='grpo', kl_coef=0.5)
  batch, key = _rl_batch(), jax.random.key(0)
  full_update = ts.make_rl_update(graphdef, tx, loss_cfg, group_size=2, donate=False)
  full, full_m = full_update(ts.init_train_state(frozen, tx), frozen, batch, key)
  combine = lambda p, f: lora.merge(p, f, scale=cfg.scale)
  lora_update = ts.make_rl_update(graphdef, tx, loss_cfg, group_size=2, donate=False,
                                  combine=combine)
  ref = jax.tree.map(jnp.copy, adapters)  # B = 0: the reference is the base policy
  state, m = lora_update(ts.init_train_state(adapters, tx), ref, batch, key, frozen=frozen)
  _check_one_sgd_step(frozen, full.params, adapters, state.params, lr, cfg.scale)
  np.testing.assert_allclose(m['loss/total'], full_m['loss/total'], rtol=1e-5)
  np.testing.assert_allclose(m['kl_ref'], 0.0, atol=1e-7)


def test_optimizer_state_shrinks_to_the_adapters():
  model = _model()
  frozen = nnx.state(model, nnx.Param)
  adapters = lora.init_adapters(model, lora.LoraConfig(rank=2))
  tx = ts.make_optimizer(ts.OptimizerConfig(optimizer='adamw', max_grad_norm=1.0))
  nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))
  n_adapter = sum(2 * (o + i) for o, i in PROJ.values())  # r (in + out) per projection
  v, d, f = CFG.vocab_size, CFG.d_model, CFG.ffn_dim
  n_all = 2 * v * d + 2 * d + d + sum(o * i for o, i in PROJ.values())  # + embed, lm_head, norms
  assert lora.num_params(frozen) == n_all
  full_bytes = nbytes(ts.init_train_state(frozen, tx).opt_state)
  lora_bytes = nbytes(ts.init_train_state(adapters, tx).opt_state)
  # Adam keeps two float32 moments per parameter, plus a few int32 counters.
  assert 8 * n_all <= full_bytes <= 8 * n_all + 64
  assert 8 * n_adapter <= lora_bytes <= 8 * n_adapter + 64
  np.testing.assert_allclose(lora_bytes / full_bytes, n_adapter / n_all, rtol=0.02)
  assert n_adapter / n_all < 0.3


def _kl_to_teacher(graphdef, teacher_logits, tokens):
  """Token-mean KL(teacher || policy) over all positions: a loss whose minimum is 0."""

  def kl(params):
    logits = nnx.merge(graphdef, params)(tokens)
    p = jax.nn.log_softmax(teacher_logits)
    return jnp.mean(jnp.sum(jnp.exp(p) * (p - jax.nn.log_softmax(logits)), -1))

  return kl


def _fit(loss, params, steps, lr):
  tx = optax.adam(lr)

  @jax.jit
  def run(params):
    def body(carry, _):
      params, opt = carry
      value, grads = jax.value_and_grad(loss)(params)
      updates, opt = tx.update(grads, opt, params)
      return (optax.apply_updates(params, updates), opt), value
    (params, _), values = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
    return params, values, loss(params)

  return run(params)


def test_rank_r_lora_reaches_full_finetuning_on_a_rank_r_teacher():
  """Teacher = base + a rank-2 change of every projection. Rank-2 LoRA and full fine-tuning,
  400 Adam steps each (lr 3e-2) on the KL to the teacher on 16 sequences, both end below 1% of
  the initial KL, and within 1% of it of each other."""
  rank = 2
  model = Transformer(dataclasses.replace(CFG, initializer_range=0.3), rngs=nnx.Rngs(0))
  graphdef, frozen = nnx.split(model)
  cfg = lora.LoraConfig(rank=rank, alpha=float(rank))
  change = _random_adapters(lora.init_adapters(model, cfg), seed=9)
  teacher = lora.merge(jax.tree.map(lambda x: 0.21 * x, change), frozen, scale=1.0)
  tokens = jax.random.randint(jax.random.key(3), (16, 8), 0, CFG.vocab_size)
  teacher_logits = nnx.merge(graphdef, teacher)(tokens)
  kl = _kl_to_teacher(graphdef, teacher_logits, tokens)
  kl0 = float(kl(frozen))
  assert kl0 > 0.1  # the teacher is far enough from the base for the test to mean something
  _, _, kl_full = _fit(kl, frozen, 400, 3e-2)
  adapters = lora.init_adapters(model, cfg, seed=1)
  _, values, kl_lora = _fit(lambda a: kl(lora.merge(a, frozen, scale=cfg.scale)), adapters,
                            400, 3e-2)
  np.testing.assert_allclose(values[0], kl0, rtol=1e-5)  # B = 0: LoRA starts at the base
  assert float(kl_full) < 0.01 * kl0
  assert float(kl_lora) < 0.01 * kl0
  assert abs(float(kl_lora) - float(kl_full)) < 0.01 * kl0


@pytest.mark.parametrize('field, value, pattern', [
    ('lora_targets', 'layers/(', r"--lora_targets='layers/\(' is invalid.*regular expression"),
    ('lora_targets', ' ', r'--lora_targets.*at least one module'),
    ('lora_rank', -1, r'--lora_rank=-1 is invalid'),
    ('lora_alpha', 0.0, r'--lora_alpha=0.0 is invalid'),
])
def test_lora_flags_are_validated(field, value, pattern):
  from experiments import config as config_lib
  with pytest.raises(ValueError, match=pattern):
    config_lib.Config(**{field: value}).validate()
