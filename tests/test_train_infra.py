"""Tests of rljax.train's mesh, checkpoint and metric-writer modules (no model compilation)."""

import glob
import io
import json
import os
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rljax.train import checkpoint as ckpt_lib
from rljax.train import mesh as mesh_lib
from rljax.train import metrics as metrics_lib


# ------------------------------------------------------------------------------------ mesh


def test_make_mesh_axes_are_auto_and_named():
  mesh = mesh_lib.make_mesh(data=2, fsdp=2, tensor=2)
  assert mesh.axis_names == ('data', 'fsdp', 'tensor')
  assert dict(mesh.shape) == {'data': 2, 'fsdp': 2, 'tensor': 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_make_mesh_errors_name_the_axis():
  with pytest.raises(ValueError, match="'fsdp'"):
    mesh_lib.make_mesh(fsdp=0)
  with pytest.raises(ValueError, match='needs 64 devices'):
    mesh_lib.make_mesh(data=64)


def test_partition_rules_on_llama_paths():
  params = {
      'embed_tokens': {'weight': jnp.zeros((12, 8))},
      'layers': {0: {'self_attn': {'q_proj': {'weight': jnp.zeros((8, 8))},
                                   'o_proj': {'weight': jnp.zeros((8, 8))}},
                     'mlp': {'down_proj': {'weight': jnp.zeros((16, 8))}},
                     'input_layernorm': {'weight': jnp.zeros((8,))}}},
      'lm_head': {'weight': jnp.zeros((12, 8))},
  }
  specs = mesh_lib.param_specs(params, mesh_lib.make_mesh(fsdp=2, tensor=2))
  assert specs['layers'][0]['self_attn']['q_proj']['weight'] == P('tensor', 'fsdp')
  assert specs['layers'][0]['self_attn']['o_proj']['weight'] == P('fsdp', 'tensor')
  assert specs['layers'][0]['mlp']['down_proj']['weight'] == P('fsdp', 'tensor')
  assert specs['lm_head']['weight'] == P('tensor', 'fsdp')
  assert specs['embed_tokens']['weight'] == P(None, ('tensor', 'fsdp'))
  # A vector: fsdp fallback on its only dimension.
  assert specs['layers'][0]['input_layernorm']['weight'] == P('fsdp')
  # One device: everything replicated.
  one = mesh_lib.param_specs(params, mesh_lib.make_mesh())
  assert all(s == P() for s in jax.tree.leaves(one, is_leaf=lambda x: isinstance(x, P)))


def test_rule_that_does_not_divide_falls_back():
  params = {'q_proj': {'weight': jnp.zeros((3, 8))}}  # 3 rows: not divisible by tensor=2
  specs = mesh_lib.param_specs(params, mesh_lib.make_mesh(fsdp=2, tensor=2))
  assert specs['q_proj']['weight'] == P(None, 'fsdp')


def test_shard_batch_places_rows_and_names_bad_field():
  mesh = mesh_lib.make_mesh(data=4, fsdp=2)
  out = mesh_lib.shard_batch({'tokens': np.arange(32).reshape(16, 2), 'scale': 2.0}, mesh)
  assert out['tokens'].sharding.spec == P(('data', 'fsdp'), None)
  assert len(out['tokens'].addressable_shards) == 8
  np.testing.assert_array_equal(out['tokens'], np.arange(32).reshape(16, 2))
  with pytest.raises(ValueError, match="'rewards'.*multiple of.*8"):
    mesh_lib.shard_batch({'rewards': np.zeros(12)}, mesh)


# ------------------------------------------------------------------------------ checkpoint


def _state(v):
  return {'w': jnp.full((4,), float(v)), 'count': jnp.asarray(v, jnp.int32),
          'rng': np.asarray(jax.random.key_data(jax.random.key(v)))}


def _template():
  return {'w': jnp.zeros(4), 'count': jnp.zeros((), jnp.int32),
          'rng': np.zeros(2, np.uint32)}


def test_checkpoint_roundtrip_and_retention(tmp_path):
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), max_to_keep=2)
  for s in (1, 2, 3):
    ckpt.save(s, _state(s), {'position': 10 * s})
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3]
  step, state, meta = ckpt.restore(_template())
  assert step == 3 and meta == {'position': 30}
  np.testing.assert_array_equal(state['w'], 3.0)
  np.testing.assert_array_equal(state['rng'], jax.random.key_data(jax.random.key(3)))
  ckpt.close()


def test_restore_without_checkpoint_returns_none(tmp_path):
  ckpt = ckpt_lib.Checkpointer(str(tmp_path))
  assert ckpt.restore(_template()) is None
  ckpt.close()


# When tensorstore fails to read a corrupted array, orbax's async restore leaves a callback that
# fires after its event loop closed; pytest reports that as an unraisable exception.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('corruption', ['truncate_data', 'remove_item', 'garbage_data'])
def test_corrupt_latest_falls_back_with_warning(tmp_path, corruption):
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), max_to_keep=3)
  for s in (1, 2):
    ckpt.save(s, _state(s), {'position': s})
  ckpt.close()
  latest = os.path.join(str(tmp_path), '2')
  data_files = glob.glob(os.path.join(latest, 'state', '**', 'd', '*'), recursive=True)
  assert data_files
  if corruption == 'truncate_data':
    for f in data_files:
      with open(f, 'r+b') as fh:
        fh.truncate(7)
  elif corruption == 'garbage_data':
    for f in data_files:
      size = os.path.getsize(f)
      with open(f, 'wb') as fh:
        fh.write(b'\x00' * size)
  else:
    shutil.rmtree(os.path.join(latest, 'state'))
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), max_to_keep=3)
  with pytest.warns(ckpt_lib.CheckpointFallbackWarning, match=r'\[2\].*step 1'):
    step, state, meta = ckpt.restore(_template())
  assert step == 1 and meta == {'position': 1}
  np.testing.assert_array_equal(state['w'], 1.0)
  # The unreadable step is set aside, so that step can be saved again.
  assert ckpt.all_steps() == [1]
  assert os.path.isdir(os.path.join(str(tmp_path), 'unreadable_2_0'))
  ckpt.save(2, _state(2))
  ckpt.wait()
  assert ckpt.restore(_template())[0] == 2
  ckpt.close()


def test_partial_checkpoint_directory_is_ignored(tmp_path):
  """A save killed before orbax's final rename leaves a tmp directory that is not a step."""
  ckpt = ckpt_lib.Checkpointer(str(tmp_path))
  ckpt.save(1, _state(1))
  ckpt.close()
  os.makedirs(os.path.join(str(tmp_path), '2.orbax-checkpoint-tmp-123', 'state'))
  ckpt = ckpt_lib.Checkpointer(str(tmp_path))
  assert ckpt.restore(_template())[0] == 1
  ckpt.close()


def test_all_unreadable_raises(tmp_path):
  ckpt = ckpt_lib.Checkpointer(str(tmp_path))
  ckpt.save(1, _state(1))
  ckpt.close()
  shutil.rmtree(os.path.join(str(tmp_path), '1', 'state'))
  ckpt = ckpt_lib.Checkpointer(str(tmp_path))
  with pytest.raises(RuntimeError, match='no readable checkpoint'):
    ckpt.restore(_template())
  ckpt.close()


def test_template_from_metadata(tmp_path):
  ckpt = ckpt_lib.Checkpointer(str(tmp_path))
  ckpt.save(5, {'a': jnp.ones(3)}, {'phase': 'rl'})
  ckpt.close()
  seen = []

  def template(meta):
    seen.append(meta['phase'])
    return {'a': jnp.zeros(3)}

  ckpt = ckpt_lib.Checkpointer(str(tmp_path))
  step, state, _ = ckpt.restore(template)
  ckpt.close()
  assert step == 5 and seen == ['rl']
  np.testing.assert_array_equal(state['a'], 1.0)


# --------------------------------------------------------------------------------- metrics


def test_jsonl_writer_and_resume_truncation(tmp_path):
  w = metrics_lib.JsonlWriter(str(tmp_path))
  for s in range(1, 6):
    w.write_scalars(s, {'loss': s * 0.5, 'x': np.float32(s)})
  w.close()
  # Resume from step 3: records of steps 4 and 5 (written after the checkpoint) are dropped.
  w = metrics_lib.JsonlWriter(str(tmp_path), resume_step=3)
  w.write_scalars(4, {'loss': 9.0})
  w.close()
  recs = metrics_lib.read_jsonl(str(tmp_path))
  assert [r['step'] for r in recs] == [1, 2, 3, 4]
  assert recs[-1]['loss'] == 9.0 and recs[0]['x'] == 1.0
  # A fresh run (no resume step) starts a new file.
  metrics_lib.JsonlWriter(str(tmp_path)).close()
  assert metrics_lib.read_jsonl(str(tmp_path)) == []


def test_jsonl_reader_drops_a_cut_line(tmp_path):
  with open(os.path.join(str(tmp_path), metrics_lib.JSONL_NAME), 'w') as f:
    f.write(json.dumps({'step': 1, 'a': 1.0}) + '\n{"step": 2, "a"')
  assert metrics_lib.read_jsonl(str(tmp_path)) == [{'step': 1, 'a': 1.0}]


def test_non_scalar_metric_is_an_error(tmp_path):
  w = metrics_lib.JsonlWriter(str(tmp_path))
  with pytest.raises(ValueError, match='scalars'):
    w.write_scalars(1, {'v': np.zeros(3)})


def test_console_line_has_progress_and_eta():
  buf = io.StringIO()
  w = metrics_lib.ConsoleWriter(10, keys=('reward_mean',), stream=buf)
  w.write_scalars(5, {'reward_mean': 0.25, 'other': 1.0})
  line = buf.getvalue()
  assert '[    5/10]' in line and '50.0%' in line and 'eta' in line
  assert 'reward_mean=0.25' in line and 'other' not in line


def test_tensorboard_event_file(tmp_path):
  w = metrics_lib.create_default_writer(str(tmp_path), total_steps=2, console=False)
  w.write_scalars(1, {'a': 1.0})
  w.close()
  assert glob.glob(os.path.join(str(tmp_path), 'tensorboard', 'events.out.tfevents.*'))
  assert metrics_lib.read_jsonl(str(tmp_path))[0]['a'] == 1.0


def test_non_zero_process_writes_nothing(tmp_path):
  w = metrics_lib.create_default_writer(str(tmp_path), total_steps=2, just_logging=True)
  assert isinstance(w, metrics_lib.NullWriter)
  w.write_scalars(1, {'a': 1.0})
  assert not os.path.exists(os.path.join(str(tmp_path), metrics_lib.JSONL_NAME))
