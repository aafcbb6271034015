"""End to end: the launcher trains LoRA adapters (`--lora_rank=4`), `experiments.export` writes
the merged policy as a Hugging Face checkpoint, transformers reloads it with rljax's logits.

Also: the export's one-line errors, the tokenizer files of a Hugging Face run, and the export of
a full fine-tuning run (a checkpoint written by hand).
"""

import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import config as config_lib
from experiments import export as export_lib
from rljax.train import checkpoint as ckpt_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LORA_FLAGS = [
    '--task_args={"levels": [1], "ops": ["+"]}', '--d_model=16', '--num_layers=1',
    '--num_heads=2', '--ffn_dim=32', '--sft_steps=2', '--sft_batch_size=8', '--sft_num_demos=16',
    '--sft_learning_rate=0.05', '--rl_steps=1', '--num_prompts=4', '--group_size=2',
    '--max_new_tokens=4', '--rl_pool_size=8', '--eval_num=2', '--eval_samples=1',
    '--console=false', '--tensorboard=false', '--kl_coef=0.1', '--lora_rank=4',
    '--lora_alpha=8', '--seed=1',
]


def _python(module, *args, timeout=240):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return subprocess.run([sys.executable, '-m', module, *args], capture_output=True, text=True,
                        cwd=ROOT, env=env, timeout=timeout)


@pytest.fixture(scope='module')
def lora_run(tmp_path_factory):
  """A finished `--lora_rank=4` run (warm start and RL on adapters) and its export."""
  root = tmp_path_factory.mktemp('lora')
  workdir, out = str(root / 'run'), str(root / 'hf')
  proc = _python('experiments.launch', f'--workdir={workdir}', *LORA_FLAGS)
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = _python('experiments.export', f'--workdir={workdir}', f'--out={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'LoRA rank 4 merged' in proc.stdout
  return workdir, out


def _leaf_paths(tree):
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def test_the_lora_checkpoint_holds_adapters_only(lora_run):
  workdir, _ = lora_run
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  _, state, meta = ckpt.restore(None)
  ckpt.close()
  assert meta['phase'] == 'done'
  for part in ('params', 'opt_state'):
    paths = [p for p in _leaf_paths(state['train'][part]) if 'count' not in p]
    assert paths and all(("'lora_a'" in p) or ("'lora_b'" in p) for p in paths), paths
  ref = _leaf_paths(state['ref_params'])
  assert len(ref) == 2 * 7 and all("'lora_" in p for p in ref)  # 7 projections x (A, B)


def _rljax_policy(workdir):
  """The run's base (rebuilt by the Harness from config.json) and its restored adapters."""
  from experiments.train import Harness
  config = export_lib.load_run_config(workdir)
  harness = Harness(config, workdir)
  template = harness._state_template  # pylint: disable=protected-access
  _, state, _ = harness.checkpointer.restore(template)
  harness.close()
  return harness, state['train'].params


def test_reloaded_in_transformers_the_export_has_the_merged_weights_and_rljax_logits(lora_run):
  import torch
  import transformers
  workdir, out = lora_run
  harness, adapters = _rljax_policy(workdir)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(out)  # float32
  hf_weights = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
  # The merge, recomputed here: W + (alpha / r) (A B)^T with alpha / r = 8 / 4.
  moved = 0.0
  for module in ('self_attn.q_proj', 'self_attn.o_proj', 'mlp.down_proj'):
    node_a, node_f = adapters['layers'][0], harness.frozen['layers'][0]
    for k in module.split('.'):
      node_a, node_f = node_a[k], node_f[k]
    a, b = np.asarray(node_a['lora_a'][...]), np.asarray(node_a['lora_b'][...])
    w = np.asarray(node_f['weight'][...])
    np.testing.assert_allclose(hf_weights[f'model.layers.0.{module}.weight'],
                               w + 2.0 * (a @ b).T, rtol=1e-6, atol=1e-7)
    moved = max(moved, float(np.abs(2.0 * a @ b).max()))
  assert moved > 1e-3  # the adapters were trained: the export differs from the base
  model = nnx.merge(harness.graphdef, harness.policy_params(adapters))
  tokens = np.array([[2, 5, 7, 1, 4, 9, 3], [2, 6, 6, 8, 10, 1, 12]], np.int32)
  want = np.asarray(model(tokens))
  with torch.no_grad():
    got = hf_model(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
  with open(os.path.join(out, 'config.json')) as f:
    hf_config = json.load(f)
  assert hf_config['eos_token_id'] == harness.tok.eos_id
  assert sorted(os.listdir(out)) == ['config.json', 'generation_config.json',
                                     'model.safetensors', 'tokenizer.json',
                                     'tokenizer.model', 'tokenizer.vocab',
                                     'tokenizer_config.json']
  from rljax.data.tokenizer import Tokenizer
  exported = Tokenizer.load(os.path.join(out, 'tokenizer.model'))
  assert exported.encode('12+3=') == harness.tok.encode('12+3=')
  auto = transformers.AutoTokenizer.from_pretrained(out)
  prompt = harness.data.eval_prompts[0]
  assert auto(prompt)['input_ids'] == harness.tok.encode(prompt, add_bos=True)
  assert auto.eos_token_id == harness.tok.eos_id and auto.pad_token_id == harness.tok.pad_id


def test_export_errors_are_one_line(lora_run, tmp_path):
  workdir, out = lora_run
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'config.json').write_text('{}')
  cases = [
      ([f'--workdir={empty}', f'--out={tmp_path / "x"}'], r'--workdir=.* has no checkpoint'),
      ([f'--workdir={tmp_path / "nope"}', f'--out={tmp_path / "x"}'], r'--workdir=.* does not '
       'exist'),
      ([f'--workdir={workdir}', f'--out={out}'], r'--out=.* exists and is not empty'),
  ]
  for args, pattern in cases:
    proc = _python('experiments.export', *args, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_a_hugging_face_run_exports_the_checkpoint_tokenizer_files(tmp_path):
  import tokenizers
  from rljax.data.tokenizer import HFTokenizer
  hf_dir = tmp_path / 'hf'
  hf_dir.mkdir()
  vocab = {'<pad>': 0, '<s>': 1, '</s>': 2, 'a': 3, 'b': 4}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token='<pad>'))
  tok.save(str(hf_dir / 'tokenizer.json'))
  (hf_dir / 'tokenizer_config.json').write_text(json.dumps(
      {'bos_token': '<s>', 'eos_token': '</s>', 'pad_token': '<pad>'}))
  config = config_lib.Config(init_from_hf=str(hf_dir))
  out = tmp_path / 'out'
  out.mkdir()
  files = export_lib.write_tokenizer(config, HFTokenizer.load(str(hf_dir)), str(out))
  assert files == ['tokenizer.json', 'tokenizer_config.json']
  for name in files:
    assert (out / name).read_bytes() == (hf_dir / name).read_bytes()


def test_a_full_finetuning_run_exports_its_parameters(tmp_path):
  """No LoRA: the checkpoint's parameters are the policy (here: the initial ones plus one)."""
  from safetensors.numpy import load_file
  from experiments.train import Harness
  from rljax.train import train_step as ts
  config = config_lib.Config(task_args='{"levels": [1], "ops": ["+"]}', d_model=16,
                             num_layers=1, num_heads=2, ffn_dim=32, sft_steps=1, rl_steps=0,
                             sft_num_demos=8, sft_batch_size=8, eval_num=2, console=False,
                             tensorboard=False)
  workdir = str(tmp_path / 'run')
  harness = Harness(config, workdir)
  params = jax.tree.map(lambda x: x + 1.0, harness.init_params)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  ckpt.save(1, {'train': ts.init_train_state(params, harness.sft_tx),
                'rng': np.asarray(jax.random.key_data(harness.base_key))}, {'layout': 'sft'})
  ckpt.close()
  harness.close()
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(dataclasses.asdict(harness.config), f)  # As the launcher writes it.
  result = export_lib.export(workdir, str(tmp_path / 'hf'))
  assert result['step'] == 1 and result['lora_rank'] == 0
  tensors = load_file(str(tmp_path / 'hf' / 'model.safetensors'))
  np.testing.assert_array_equal(tensors['model.layers.0.mlp.up_proj.weight'],
                                np.asarray(params['layers'][0]['mlp']['up_proj']['weight'][...]))


def test_lora_flag_errors_of_the_harness_name_the_flag(lora_run, tmp_path):
  from experiments.train import Harness
  workdir, _ = lora_run
  base = dict(task_args='{"levels": [1], "ops": ["+"]}', d_model=16, num_layers=1, num_heads=2,
              ffn_dim=32, sft_steps=0, rl_steps=1, rl_pool_size=8, eval_num=2, num_prompts=4,
              group_size=2, console=False, tensorboard=False)
  with pytest.raises(config_lib.FlagValueError, match=r"--lora_targets='wq'.*'q_proj'"):
    Harness(config_lib.Config(lora_rank=2, lora_targets='wq', **base), str(tmp_path / 'a'))
  with pytest.raises(config_lib.FlagValueError, match=r'--init_from_workdir=.* is a LoRA run'):
    Harness(config_lib.Config(init_from_workdir=workdir, **base), str(tmp_path / 'b'))


@pytest.mark.parametrize('model_type', ['char', 'unigram', 'bpe'])
def test_a_task_tokenizer_as_tokenizer_json_encodes_as_sentencepiece(model_type, tmp_path):
  from rljax.data import hf_tokenizer, tasks
  from rljax.data.tokenizer import HFTokenizer, Tokenizer
  corpus = tasks.tokenizer_corpus(tasks.get_task('arithmetic'), 300, split='train')
  corpus += ['What is 12 + 7?', 'what is  this\n\n 3', 'a  b  c'] * 20  # spaces, newlines
  tok = Tokenizer.train(corpus, vocab_size=48, model_type=model_type)
  assert hf_tokenizer.write_hf_tokenizer(tok, str(tmp_path), add_bos=True) == [
      'tokenizer.json', 'tokenizer_config.json']
  loaded = HFTokenizer.load(str(tmp_path))
  assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.unk_id) == (2, 3, 0, 1)
  texts = corpus + ['What is 12 + 7?  ', ' 3\n\n4 ', '  this is 9', 'zq~', '']
  for text in texts:
    ids = tok.encode(text)
    assert loaded.encode(text) == ids, text
    if tok.unk_id not in ids:  # sentencepiece writes an unknown piece as ' ⁇ ', tokenizers not
      assert loaded.decode(ids) == tok.decode(ids) == text, text
    assert loaded._tok.encode(text).ids == [2] + ids  # pylint: disable=protected-access


def test_a_sentencepiece_model_without_an_exact_equivalent_is_refused():
  from rljax.data import hf_tokenizer, tasks
  from rljax.data.tokenizer import Tokenizer
  corpus = tasks.tokenizer_corpus(tasks.get_task('arithmetic'), 100, split='train')
  tok = Tokenizer.train(corpus, vocab_size=32, model_type='char', add_dummy_prefix=True)
  with pytest.raises(ValueError, match='no exact tokenizers equivalent.*add_dummy_prefix=True'):
    hf_tokenizer.to_tokenizers(tok.serialized_model_proto)


def test_load_run_config_resets_the_mesh_and_cpu_devices(tmp_path):
  # A run launched with --cpu_devices=3 --mesh_data=3 exports on this process's devices: the
  # Harness that export builds would otherwise refuse a device count JAX did not start with.
  from experiments import config as config_lib  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  run = config_lib.Config(cpu_devices=3, mesh_data=3, num_prompts=6, sft_batch_size=12)
  (tmp_path / 'config.json').write_text(json.dumps(dataclasses.asdict(run)))
  config = export_lib.load_run_config(str(tmp_path))
  assert (config.cpu_devices, config.mesh_data, config.mesh_fsdp, config.mesh_tensor) == (
      0, 1, 1, 1)
  assert config.num_prompts == 6
  train._check_devices(config)  # pylint: disable=protected-access
  with pytest.raises(config_lib.FlagValueError, match='--cpu_devices=3'):
    train._check_devices(run)  # pylint: disable=protected-access
