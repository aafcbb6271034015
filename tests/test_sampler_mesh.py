"""The sampler on every mesh: same tokens and log-probs, a sharded KV cache, one trace per shape.

`rljax.sampling.sampler.sample_fn` jitted as `experiments.train.Harness.sampler` does, called
under `jax.set_mesh(mesh)` with parameters placed by the partition rules and prompts split over
the batch axes, on the meshes of `tests/mesh_cases.py`. For a fixed key the sampled tokens are
identical to the one-device run's (bit for bit) and the behaviour / untruncated log-probs agree
to 1e-5 (float32: the sharded matmuls sum in another order, so the last bits may differ).

Each mesh compiles the sampler once (with XLA's backend optimisation level 0, to keep the
module fast; the program is the same). A second call with another key and other parameter
values traces nothing: `rljax.models.decode.trace_counts` shows one prefill and one decode step
per cache length (two segments of `segment_size=4`, so two decode-step shapes) per mesh.
"""

import functools

import jax
import numpy as np
import pytest

from rljax.models import decode
from rljax.sampling import sampler as sampler_lib
from rljax.train import mesh as mesh_lib
from tests import mesh_cases as mc

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason='needs 8 devices (conftest.py)')

OPTS = dict(max_new_tokens=mc.N, temperature=1.0, top_k=None, top_p=None, min_p=None,
            stop_tokens=(2,), pad_id=0, segment_size=4)
NUM_SEGMENTS = 2   # decode steps 1..7 in segments [1, 5) and [5, 8)

_RUNS = {}


def _prompts():
  batch = mc.host_batch()
  return batch.sample.tokens[:, :mc.P], batch.sample.prompt_mask[:, :mc.P]


def run(mesh_name: str):
  """`(rollout, second rollout, traces of the first call, traces of the second)` on a mesh."""
  if mesh_name not in _RUNS:
    graphdef, params = mc.split_model()
    fn = functools.partial(sampler_lib.sample_fn, graphdef, **OPTS)
    sample = jax.jit(lambda p, t, m, k: fn(p, t, m, k), compiler_options=mc.FAST_COMPILE)
    m = mc.mesh(mesh_name)
    with jax.set_mesh(m):
      placed = mc.place_params(params, m)
      ids, mask = mesh_lib.shard_batch(_prompts(), m)
      before = dict(decode.trace_counts)
      out = jax.device_get(sample(placed, ids, mask, jax.random.key(7)))
      first = {k: decode.trace_counts[k] - before.get(k, 0) for k in decode.trace_counts}
      other = jax.tree.map(lambda x: x * 1.01, placed)   # new values, same shardings
      out2 = jax.device_get(sample(other, ids, mask, jax.random.key(8)))
      second = {k: decode.trace_counts[k] - before.get(k, 0) - first[k]
                for k in decode.trace_counts}
    _RUNS[mesh_name] = (out, out2, first, second)
  return _RUNS[mesh_name]


@pytest.mark.parametrize('mesh_name', [m for m in mc.MESHES if m != '1'])
def test_sampler_matches_one_device(mesh_name):
  ref, _, _, _ = run('1')
  out, _, _, _ = run(mesh_name)
  assert ref.completion_mask.sum() > 0
  np.testing.assert_array_equal(out.tokens, ref.tokens)
  np.testing.assert_array_equal(out.completion_mask, ref.completion_mask)
  np.testing.assert_allclose(out.behavior_logp, ref.behavior_logp, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.untruncated_logp, ref.untruncated_logp, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('mesh_name', ['1', '2x2x2', '1x1x8'])
def test_prefill_and_decode_step_trace_once_per_shape(mesh_name):
  out, out2, first, second = run(mesh_name)
  assert first == {'prefill': 1, 'decode_step': NUM_SEGMENTS}, first
  assert second == {'prefill': 0, 'decode_step': 0}, second
  assert not np.array_equal(out.tokens, out2.tokens)   # the second call did run


@pytest.mark.parametrize('mesh_name,spec', [
    ('2x2x2', (('data', 'fsdp'), 'tensor')), ('1x2x4', ('fsdp', None)),
    ('8x1x1', (('data',),)), ('1x1x8', (None, None))])
def test_kv_cache_is_split_over_rows_and_heads(mesh_name, spec):
  """The cache [B, K, S, Dh] out of the prefill: rows on data/fsdp, the K = 2 kv heads on
  tensor where tensor divides 2 (2x2x2), replicated over a tensor axis of 4 or 8."""
  graphdef, params = mc.split_model()
  from flax import nnx  # pylint: disable=g-import-not-at-top
  m = mc.mesh(mesh_name)
  cfg = mc.CONFIG

  def caches(p, ids, mask):
    w = decode.fuse_weights(nnx.merge(graphdef, p))
    return decode.prefill(cfg, w, ids, mask, mc.P + 4, decode.rope_tables(cfg, mc.P + 4))[1]

  with jax.set_mesh(m):
    ids, mask = mesh_lib.shard_batch(_prompts(), m)
    k = jax.jit(caches, compiler_options=mc.FAST_COMPILE)(mc.place_params(params, m), ids,
                                                          mask)[0][0]
  expected = jax.sharding.NamedSharding(m, jax.sharding.PartitionSpec(*spec))
  assert k.sharding.is_equivalent_to(expected, k.ndim), k.sharding
  data, fsdp, tensor = mc.MESHES[mesh_name]
  split = data * fsdp * (tensor if tensor <= cfg.num_kv_heads else 1)
  held, total = mc.per_device_bytes([k])
  assert held == total // split
