"""Mixed precision and remat of the transformer.

bfloat16 compute (`compute_dtype='bfloat16'`) with float32 parameters against float32 compute,
same parameters, on the tiny model of `tests/mesh_cases.py` (logit scale ~0.1):

* the matmuls do run in bfloat16 (the jaxpr's `dot_general`s take bfloat16 operands), and the
  parameters, their gradients and the log-probs stay float32;
* logits: `max|z_bf16 - z_f32| <= 0.05 * std(z_f32)` (relative to the logits' spread);
* per-token log-probs (`rljax.models.score`): max |difference| <= 0.01 nats;
* a policy-gradient loss `-sum(A * logp * mask) / sum(mask)`: relative difference <= 1%;
* its gradient: cosine similarity >= 0.999 with the float32 gradient;
* the sampler's float32 log-probs within 0.01 of the scorer's.
(Measured on this model: 0.018 std, 0.0018 nats, 0.013%, cosine 0.99999, 0.0011 nats.)

Remat ('block', 'full') changes no value: loss and every gradient equal 'none' to 1e-6, and the
gradient's jaxpr holds a `jax.checkpoint` (remat) equation per decoder layer with the mode's
policy, none without remat.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import config as config_lib
from rljax.models import Transformer, TransformerConfig, score_fn
from rljax.sampling import sampler as sampler_lib
from tests import mesh_cases as mc

_CACHE = {}
# Names of JAX's rematerialisation primitive (`jax.checkpoint`) across versions.
_REMAT_PRIMITIVES = ('checkpoint', 'remat', 'remat2')


def _data():
  batch = mc.host_batch()
  s = batch.sample
  input_mask = np.maximum(s.prompt_mask, s.completion_mask)
  adv = np.where(batch.rewards > 0.5, 1.0, -1.0).astype(np.float32)
  return s.tokens, input_mask, s.completion_mask.astype(np.float32), adv


def _loss(graphdef, params, tokens, input_mask, mask, adv):
  logp = score_fn(graphdef, params, tokens, input_mask, mask)
  return -jnp.sum(adv[:, None] * logp * mask) / jnp.sum(mask), logp


def run(**overrides):
  """`(loss, logp, grads, logits, jaxpr of the gradient)` of the tiny model with `overrides`."""
  key = tuple(sorted(overrides.items()))
  if key not in _CACHE:
    _, params = mc.split_model()   # the same float32 values for every config
    graphdef, _ = nnx.split(nnx.eval_shape(
        lambda: Transformer(mc.CONFIG.replace(**overrides), rngs=nnx.Rngs(0))))
    tokens, input_mask, mask, adv = _data()
    grad_fn = jax.value_and_grad(
        lambda p: _loss(graphdef, p, tokens, input_mask, mask, adv), has_aux=True)
    (loss, logp), grads = jax.jit(grad_fn, compiler_options=mc.FAST_COMPILE)(params)
    logits = jax.jit(lambda p: nnx.merge(graphdef, p)(tokens, None, input_mask))(params)
    _CACHE[key] = (loss, logp, grads, logits, jax.make_jaxpr(grad_fn)(params))
  return _CACHE[key]


def _eqns(jaxpr):
  """Every equation of a closed jaxpr, nested jaxprs included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.core.jaxprs_in_params(eqn.params):
      yield from _eqns(sub)


def test_bfloat16_compute_runs_bf16_matmuls_and_keeps_float32_params_and_logp():
  loss, logp, grads, logits, jaxpr = run(compute_dtype='bfloat16')
  dots = [e for e in _eqns(jaxpr.jaxpr) if e.primitive.name == 'dot_general']
  bf16 = [e for e in dots if all(v.aval.dtype == jnp.bfloat16 for v in e.invars)]
  assert len(bf16) >= 7 * mc.CONFIG.num_layers, (len(bf16), len(dots))
  assert logp.dtype == jnp.float32 and logits.dtype == jnp.float32 and loss.dtype == jnp.float32
  assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
  _, _, _, _, jaxpr32 = run()
  assert not [e for e in _eqns(jaxpr32.jaxpr) if e.primitive.name == 'dot_general'
              and any(v.aval.dtype == jnp.bfloat16 for v in e.invars)]


def test_bfloat16_compute_agrees_with_float32_within_stated_tolerances():
  loss32, logp32, grads32, logits32, _ = run()
  loss16, logp16, grads16, logits16, _ = run(compute_dtype='bfloat16')
  z32, z16 = np.asarray(logits32), np.asarray(logits16)
  assert np.max(np.abs(z16 - z32)) <= 0.05 * np.std(z32)
  assert np.max(np.abs(np.asarray(logp16) - np.asarray(logp32))) <= 0.01
  assert abs(float(loss16) - float(loss32)) <= 0.01 * abs(float(loss32))
  g32 = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads32)])
  g16 = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads16)])
  cosine = g16 @ g32 / (np.linalg.norm(g16) * np.linalg.norm(g32))
  assert cosine >= 0.999, cosine
  assert not np.array_equal(z16, z32)   # bfloat16 did change something


@pytest.mark.parametrize('remat,policy', [
    ('block', jax.checkpoint_policies.dots_with_no_batch_dims_saveable),
    ('full', jax.checkpoint_policies.nothing_saveable)])
def test_remat_changes_no_value_and_is_in_the_jaxpr(remat, policy):
  loss0, logp0, grads0, _, jaxpr0 = run()
  loss, logp, grads, _, jaxpr = run(remat=remat)
  np.testing.assert_allclose(float(loss), float(loss0), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(logp, logp0, rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads0)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  remats = [e for e in _eqns(jaxpr.jaxpr) if e.primitive.name in _REMAT_PRIMITIVES]
  assert len(remats) >= mc.CONFIG.num_layers
  assert all(e.params['policy'] is policy for e in remats)
  assert not [e for e in _eqns(jaxpr0.jaxpr) if e.primitive.name in _REMAT_PRIMITIVES]


def test_transformer_config_rejects_bad_precision_and_remat():
  with pytest.raises(ValueError, match='compute_dtype must be one of'):
    TransformerConfig.tiny(compute_dtype='int8')
  with pytest.raises(ValueError, match="remat must be one of.*'bogus'"):
    TransformerConfig.tiny(remat='bogus')
  cfg = TransformerConfig.tiny(param_dtype='float32', compute_dtype='bfloat16')
  assert cfg.dtype == jnp.float32 and cfg.activation_dtype == jnp.bfloat16
  assert TransformerConfig.tiny(param_dtype='bfloat16').activation_dtype == jnp.bfloat16


def test_hf_config_takes_precision_overrides():
  hf = TransformerConfig.tiny().to_hf_config()
  cfg = TransformerConfig.from_hf_config(hf, compute_dtype='bfloat16', remat='full')
  assert (cfg.param_dtype, cfg.compute_dtype, cfg.remat) == ('float32', 'bfloat16', 'full')


def test_launcher_flags_validate_with_one_line_errors():
  base = dict(rl_steps=1)
  ok = config_lib.Config(compute_dtype='bfloat16', remat='block', **base).validate()
  assert (ok.compute_dtype, ok.remat) == ('bfloat16', 'block')
  for field, value, message in [
      ('compute_dtype', 'float16', r"--compute_dtype='float16' is invalid"),
      ('remat', 'layer', r"--remat='layer' is invalid; valid values: \['none', 'block', 'full'\]"),
      ('param_dtype', 'bfloat16', r'--param_dtype=bfloat16 would keep the gradients.*'
                                  r'--compute_dtype=bfloat16')]:
    with pytest.raises(ValueError, match=message) as e:
      config_lib.Config(**{field: value}, **base).validate()
    assert '\n' not in str(e.value)


def test_bfloat16_sampler_records_float32_logp_close_to_the_scorer():
  """The sampler in bfloat16 compute: float32 log-probs within 0.01 of `score`'s (the two
  compute in bfloat16 in other orders; in float32 they agree to 1e-5, tests/test_sampling.py)."""
  cfg = mc.CONFIG.replace(compute_dtype='bfloat16')
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
  _, params = mc.split_model()
  tokens, input_mask, _, _ = _data()
  fn = jax.jit(lambda p, t, m, k: sampler_lib.sample_fn(graphdef, p, t, m, k,
                                                        max_new_tokens=mc.N),
               compiler_options=mc.FAST_COMPILE)
  out = fn(params, tokens[:, :mc.P], input_mask[:, :mc.P], jax.random.key(0))
  assert out.behavior_logp.dtype == jnp.float32
  mask = out.completion_mask
  logp = jax.jit(lambda p: score_fn(graphdef, p, out.tokens,
                                    jnp.maximum(out.prompt_mask, mask), mask))(params)
  assert float(jnp.sum(mask)) > 0
  assert float(jnp.max(jnp.abs(logp - out.untruncated_logp))) <= 0.01
