r"""One GRPO step, sample + reward + update: rljax's launcher against TRL and tunix, same work.

The script saves one random Hugging Face `LlamaForCausalLM` (4 layers, hidden 256, 4 heads,
ffn 1024, vocabulary 512, float32, `rope_theta` 1e6 because tunix's Llama3 ignores it) with
`save_pretrained`, and a word-level `tokenizers` tokenizer.json (ids 0-3 `<pad> <unk> <eos>
<bos>`, then the words `w4 .. w511`) saved as a `PreTrainedTokenizerFast`. Prompts are random
words, so every system encodes them to the same ids (no BOS is added by any of them). Each
system then runs GRPO steps on 8 prompts x 8 completions:

  * rljax: `experiments.train.Harness` with the launcher's flags (`--init_from_hf
    --sft_steps=0 --num_epochs=1 --num_minibatches=1 --kl_coef=0`, AdamW) and its RL step
    `experiments.rl.rl_step` (curriculum, jitted sampler, grading, jitted update), with the
    launcher's default XLA flags (`experiments.xla_defaults`: XLA:CPU's YNN dot/reduce fusion
    unless XLA_FLAGS is set) and the opt-in large-block malloc options
    (`RLJAX_LARGE_BLOCK_MALLOC=1`, `experiments.malloc_defaults`: one glibc arena that keeps
    its pages, so XLA:CPU's per-execution buffers are not faulted in afresh each step; off with
    `--plain-malloc`; the peers run with glibc's defaults unless `--peer-malloc`); only the
    prompt pool and the grader are replaced by the benchmark's. 'rljax' runs on one XLA:CPU
    device, the launcher's default; 'rljax:N' (for each count N > 1 in `--rljax-devices`,
    default 1,2) is the same run with the launcher's `--cpu_devices=N --mesh_data=N`: the
    host is split into N XLA:CPU devices and every batch's rows into N parts, one per device.
    Every system gets the same `--threads` cores. The split pays where XLA:CPU runs work on
    one thread: a decode step's attention over the KV cache is a batched matmul of small
    matrices, which XLA:CPU runs on one thread per device;
  * TRL: `trl.GRPOTrainer` (`GRPOConfig(beta=0, num_iterations=1, loss_type='dapo',
    gradient_checkpointing=False, use_cpu=True, generation_kwargs={'use_cache': True})`), eager
    PyTorch, `model.generate` rollouts with a KV cache. The last option matters: under
    transformers 5, `Trainer.__init__` sets `model.config.use_cache = args.use_cache`, whose
    default is False, and TRL 1.16's generation config does not set `use_cache`, so without it
    `generate` runs without a KV cache (a full forward pass per new token: 24-38 s rollouts at
    8x8x64 instead of about 1 s). TRL's GRPO docs pass generation options through
    `generation_kwargs`, which is what a user who noticed would do;
  * tunix: `tunix.GRPOLearner` on an `RLCluster` with the vanilla rollout engine, the model
    loaded from the same safetensors into tunix's Llama3, a mesh of `AxisType.Auto` axes.

Same work: sampling at temperature 1 with no top-k/top-p, up to N new tokens, the end token
`<eos>` ends a completion (and is part of it), the same reward (the fraction of completion
words with an even id), group-normalised advantages (mean and std), the PPO-clip loss with
eps 0.2 averaged over all completion tokens of the batch (TRL's 'dapo', rljax's 'token-mean';
tunix's default 'sequence-mean-token-mean' is kept and noted below), one AdamW step (lr 1e-6,
betas 0.9/0.999, eps 1e-8, no weight decay, gradient clipping at norm 1), no KL, no reference.

Differences in work that remain:
  * passes: all three skip the old-log-prob pass (one epoch, one mini-batch: the anchor is the
    detached current log-probs) and score no reference (beta / kl_coef 0). rljax prefills each
    prompt once for its 8 completions, runs each prompt once per group in the update's
    forward and backward passes too (the completions attend to its keys and values; same
    gradient as the 8 rows run in full), and applies the output layer to the completion
    columns only; TRL prefills every completion row (`generate` on repeated prompts), runs
    every row in full in the update and applies the output layer to the completion positions
    (`logits_to_keep`); tunix prefills and trains on every row in full and computes the
    logits of every position before slicing the completion's;
  * generation stops in all three when every row has emitted `<eos>` or at N tokens; with a
    random model that is almost always N tokens;
  * tunix's loss aggregation is per sequence then mean (`loss_agg_mode` default), the others
    per token over the batch (a different normaliser, not different FLOPs);
  * TRL and tunix tokenize the prompt text each step (tens of microseconds here);
  * 'rljax:2' splits the cores into two XLA:CPU devices; TRL runs in one process whose torch
    ops use the cores through intra-op threads, and tunix on a one-device mesh.

Timing: each system lives in its own process with `--threads` CPU threads (affinity and
intra-op threads; `OMP_WAIT_POLICY=PASSIVE` unless set, see `_limit_threads`); after
`--warmup` untimed steps (compilation, first allocations) the systems run in alternating blocks
of `--steps` steps (`--blocks` rounds), so load from other processes falls on every system.
Reported per system: median step time with the range of the block medians, the rollout
(sampling + reward) / update split, the process CPU seconds per step (all threads; less
sensitive to other processes' load than wall time) and its minor page faults per step, the
first step's time less the median ("compile", for rljax the two jits; for TRL/tunix their
warm-up), the process's peak resident memory, and each peer's median step over each rljax
system's (the throughput ratios, one column per rljax system). In the long-prompt setting
rljax's rollout is also timed with every prompt repeated G times (no shared prefill).

Usage:
  python benchmarks/rl_step.py                       # 8 x 8 x 64, every system
  python benchmarks/rl_step.py --setting decode      # 256 new tokens
  python benchmarks/rl_step.py --setting long        # 256-token prompts, group size 8
  python benchmarks/rl_step.py --ynn-fusion          # YNN dot/reduce fusion for tunix too
  python benchmarks/rl_step.py --plain-xla           # rljax without the launcher's XLA flags
  python benchmarks/rl_step.py --peer-malloc         # large-block malloc options for the peers
  python benchmarks/rl_step.py --plain-malloc        # rljax without them
  python benchmarks/rl_step.py --rljax-devices 1     # rljax on one XLA:CPU device only
  python benchmarks/rl_step.py --quick --peers ''    # smoke test of rljax alone
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback

SETTINGS = {  # prompts, group size, prompt tokens, new tokens
    'default': dict(num_prompts=8, group_size=8, prompt_len=16, new_tokens=64),
    'decode': dict(num_prompts=8, group_size=8, prompt_len=16, new_tokens=256),
    'long': dict(num_prompts=8, group_size=8, prompt_len=256, new_tokens=64),
}
QUICK = dict(num_prompts=2, group_size=2, prompt_len=8, new_tokens=8)
MODEL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
             intermediate_size=1024, vocab_size=512, rope_theta=1e6)
SPECIALS = ('<pad>', '<unk>', '<eos>', '<bos>')
LEARNING_RATE = 1e-6
# The XLA CPU option the launcher sets by default (experiments/xla_defaults.py); rljax's process
# gets it as the launcher would (unless XLA_FLAGS is set), tunix only with --ynn-fusion.
YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type=dot,reduce'
# Set by --peer-malloc: the peers' processes also apply the large-block malloc options.
_PEER_MALLOC = 'RLJAX_BENCHMARK_PEER_MALLOC'
# Set by --plain-malloc: rljax's process runs with glibc's malloc defaults.
_PLAIN_MALLOC = 'RLJAX_BENCHMARK_PLAIN_MALLOC'


def _parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--setting', choices=tuple(SETTINGS) + ('all',), default='default')
  p.add_argument('--peers', default='trl,tunix', help="comma-separated peers ('' for none)")
  p.add_argument('--steps', type=int, default=3, help='timed steps per block and system')
  p.add_argument('--blocks', type=int, default=3, help='alternating blocks')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps first')
  p.add_argument('--threads', type=int, default=2, help='CPU threads per system')
  p.add_argument('--rljax-devices', default='1,2',
                 help='comma-separated XLA:CPU device counts, one rljax system each '
                      "(N > 1: 'rljax:N', the launcher's --cpu_devices=N --mesh_data=N)")
  p.add_argument('--quick', action='store_true', help='tiny shapes, 1 block of 1 step')
  p.add_argument('--json', default='', help='also write the results to this file')
  p.add_argument('--ynn-fusion', action='store_true',
                 help=f'append {YNN_FLAG} to XLA_FLAGS of both JAX systems (rljax, tunix)')
  p.add_argument('--plain-xla', action='store_true',
                 help="rljax without the launcher's XLA defaults (XLA_FLAGS='' unless set)")
  p.add_argument('--peer-malloc', action='store_true',
                 help='the large-block glibc malloc options for TRL and tunix too')
  p.add_argument('--plain-malloc', action='store_true',
                 help='rljax with glibc malloc defaults')
  args = p.parse_args(argv)
  args.peers = [x for x in args.peers.split(',') if x]
  for peer in args.peers:
    if peer not in ('trl', 'tunix'):
      raise SystemExit(f'--peers: unknown peer {peer!r} (trl, tunix)')
  try:
    counts = [int(x) for x in args.rljax_devices.split(',') if x.strip()]
  except ValueError:
    counts = []
  if not counts or min(counts) < 1 or len(set(counts)) < len(counts):
    raise SystemExit(f'--rljax-devices must be distinct positive integers, e.g. 1,2; got '
                     f'{args.rljax_devices!r}')
  for name in (tuple(SETTINGS) if args.setting == 'all' else (args.setting,)):
    prompts = (QUICK if args.quick else SETTINGS[name])['num_prompts']
    for n in counts:
      if prompts % n:
        raise SystemExit(f'--rljax-devices: {n} devices do not divide the {prompts} prompts '
                         f'of setting {name!r} (the rows are split over the devices)')
  args.rljax = [_rljax_name(n) for n in counts]
  if args.peer_malloc and args.plain_malloc:
    raise SystemExit('--peer-malloc and --plain-malloc: choose one')
  if args.quick:
    args.steps, args.blocks, args.warmup = 1, 1, 1
  return args


# ---------------------------------------------------------------- the shared checkpoint


def make_checkpoint(directory: str, max_len: int) -> None:
  """A random float32 Llama and its word-level tokenizer, saved as Hugging Face saves them."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  vocab = {t: i for i, t in enumerate(SPECIALS)}
  vocab.update({f'w{i}': i for i in range(len(SPECIALS), MODEL['vocab_size'])})
  backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token='<unk>'))
  backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  backend.decoder = tokenizers.decoders.WordPiece(prefix='##')  # joins words with spaces
  tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token='<eos>',
                                             pad_token='<pad>', unk_token='<unk>')
  tok.save_pretrained(directory)
  torch.manual_seed(0)
  config = transformers.LlamaConfig(**MODEL, max_position_embeddings=max_len, eos_token_id=2,
                                    pad_token_id=0, bos_token_id=None, tie_word_embeddings=False,
                                    torch_dtype='float32')
  transformers.LlamaForCausalLM(config).save_pretrained(directory)


def prompt_texts(num_prompts: int, prompt_len: int, seed: int = 0) -> list[str]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  ids = rng.integers(len(SPECIALS), MODEL['vocab_size'], size=(num_prompts, prompt_len))
  return [' '.join(f'w{i}' for i in row) for row in ids]


def reward(text: str) -> float:
  """Fraction of the completion's words with an even id (the task of every system)."""
  words = [w for w in text.split() if w.startswith('w')]
  return sum(int(w[1:]) % 2 == 0 for w in words if w[1:].isdigit()) / max(len(words), 1)


# ------------------------------------------------------------------------ the systems


def _rljax_name(devices: int) -> str:
  """The system name of rljax on `devices` XLA:CPU devices: 'rljax' or 'rljax:N'."""
  return 'rljax' if devices == 1 else f'rljax:{devices}'


def _system_devices(name: str) -> tuple[str, int]:
  """('rljax', 2) for 'rljax:2'; a peer's name with 1."""
  base, _, n = name.partition(':')
  return base, int(n or 1)


def _rljax(ckpt, spec, workdir, devices=1):
  """`step() -> {'rollout', 'update'}` of the launcher's RL step on the benchmark's prompts.

  With `devices` > 1 the run has the launcher's `--cpu_devices=N --mesh_data=N` (the caller's
  process has already split the host into N devices, as the launcher does before JAX starts).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from experiments import rl  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  from experiments.config import Config  # pylint: disable=g-import-not-at-top
  config = Config(init_from_hf=ckpt, sft_steps=0, rl_steps=10**6,
                  num_prompts=spec['num_prompts'], group_size=spec['group_size'],
                  max_new_tokens=spec['new_tokens'], num_epochs=1, num_minibatches=1,
                  kl_coef=0.0, estimator='grpo', optimizer='adamw',
                  learning_rate=LEARNING_RATE, rl_pool_size=spec['num_prompts'],
                  eval_num=1, sft_num_demos=1, eval_every=0, checkpoint_every=0,
                  tensorboard=False, console=False, cpu_devices=devices, mesh_data=devices)
  harness = train.Harness(config, workdir)
  texts = prompt_texts(spec['num_prompts'], spec['prompt_len'])
  ids, mask = harness.tok.encode_batch(texts, max_len=spec['prompt_len'], add_bos=False)
  harness.data = dataclasses.replace(harness.data, task=_Grader(), pool_prompts=texts,
                                     pool_ids=np.asarray(ids), pool_mask=np.asarray(mask))
  with jax.set_mesh(harness.mesh):  # as `Harness.run` holds it around every phase
    state = harness._enter_rl(harness.init_params)  # pylint: disable=protected-access
  rl_key = jax.random.fold_in(harness.base_key, train._RL_STREAM)  # pylint: disable=protected-access
  count = [0]

  def step():
    nonlocal state
    with jax.set_mesh(harness.mesh):
      state, m = rl.rl_step(harness, state, count[0], rl_key)
    count[0] += 1
    rollout = m['sample_time'] + m['reward_time']
    return {'rollout': rollout, 'update': m['step_time'] - rollout, 'step': m['step_time']}

  extra = (lambda: _repeated_prompt_rollout(harness, state, ids, mask, spec)
           ) if spec.get('long') else None
  return step, extra


class _Grader:
  """The benchmark's reward in the shape of an rljax task's `grade_batch`."""

  def grade_batch(self, prompts, texts):
    import numpy as np  # pylint: disable=g-import-not-at-top
    del prompts
    rewards = np.asarray([reward(t) for t in texts], np.float32)
    return rewards, rewards > 0.5


def _repeated_prompt_rollout(harness, state, ids, mask, spec):
  """Seconds of the launcher's sampler with shared prefill and with every prompt repeated G."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rljax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  g, params, key = spec['group_size'], state['train'].params, jax.random.key(0)
  runs = {'shared_prefill': (harness.sampler(1.0, g), ids, mask),
          'repeated_prompts': (harness.sampler(1.0, 1), np.repeat(ids, g, 0),
                               np.repeat(mask, g, 0))}
  out = {}
  with jax.set_mesh(harness.mesh):
    for name, (fn, x, m) in runs.items():
      x, m = mesh_lib.shard_batch((x, m), harness.mesh)
      jax.block_until_ready(fn(params, x, m, key))  # compiles
      times = []
      for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(params, x, m, key).tokens)
        times.append(time.perf_counter() - t0)
      out[name] = statistics.median(times)
  return out


def _trl(ckpt, spec, workdir):
  """`step()` of `trl.GRPOTrainer.train`, which runs in a thread paced by its callback."""
  import queue  # pylint: disable=g-import-not-at-top
  import datasets  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import trl  # pylint: disable=g-import-not-at-top
  texts = prompt_texts(spec['num_prompts'], spec['prompt_len'])
  data = datasets.Dataset.from_dict({'prompt': texts * 10_000})
  b = spec['num_prompts'] * spec['group_size']
  args = trl.GRPOConfig(
      output_dir=workdir, per_device_train_batch_size=b, num_generations=spec['group_size'],
      max_completion_length=spec['new_tokens'], temperature=1.0, top_k=0, top_p=1.0, beta=0.0,
      num_iterations=1, loss_type='dapo', learning_rate=LEARNING_RATE, weight_decay=0.0,
      max_grad_norm=1.0, lr_scheduler_type='constant', gradient_checkpointing=False,
      use_cpu=True, bf16=False, fp16=False, report_to='none', save_strategy='no',
      logging_steps=10**6, max_steps=10**6, shuffle_dataset=False, dataloader_num_workers=0,
      disable_tqdm=True, seed=0,
      # Trainer.__init__ sets `model.config.use_cache = args.use_cache` (False by default in
      # transformers 5) and TRL's generation config leaves `use_cache` unset, so without this
      # `generate` recomputes the whole sequence at every new token.
      generation_kwargs={'use_cache': True})
  model = transformers.AutoModelForCausalLM.from_pretrained(ckpt, dtype='float32')
  tok = transformers.AutoTokenizer.from_pretrained(ckpt)
  trainer = trl.GRPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                            reward_funcs=lambda prompts, completions, **kw: [
                                reward(c) for c in completions])
  permits, results = queue.Queue(), queue.Queue()
  rollout = [0.0]
  generate = trainer._generate_and_score_completions  # pylint: disable=protected-access

  def timed_generate(*a, **kw):
    t0 = time.perf_counter()
    out = generate(*a, **kw)
    rollout[0] += time.perf_counter() - t0
    return out

  trainer._generate_and_score_completions = timed_generate  # pylint: disable=protected-access

  class Pace(transformers.TrainerCallback):
    t0 = 0.0

    def on_step_begin(self, *a, **kw):
      permits.get()
      rollout[0], self.t0 = 0.0, time.perf_counter()

    def on_step_end(self, *a, **kw):
      total = time.perf_counter() - self.t0
      results.put({'rollout': rollout[0], 'update': total - rollout[0], 'step': total})

  trainer.add_callback(Pace())
  return _threaded(trainer.train, permits, results), None


def _tunix(ckpt, spec, workdir):
  """`step()` of `tunix.GRPOLearner.train`, in a thread paced by its prompt iterator."""
  import queue  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from tunix.models.llama3 import model as llama_lib  # pylint: disable=g-import-not-at-top
  from tunix.models.llama3 import params as llama_params  # pylint: disable=g-import-not-at-top
  from tunix.rl import rl_cluster as rl_cluster_lib  # pylint: disable=g-import-not-at-top
  from tunix.rl.grpo import grpo_learner  # pylint: disable=g-import-not-at-top
  from tunix.rl.rollout import base_rollout  # pylint: disable=g-import-not-at-top
  del workdir
  auto = (jax.sharding.AxisType.Auto,) * 2
  mesh = jax.make_mesh((1, 1), ('fsdp', 'tp'), axis_types=auto, devices=jax.devices()[:1])
  h = MODEL['hidden_size'] // MODEL['num_attention_heads']
  config = llama_lib.ModelConfig(
      num_layers=MODEL['num_hidden_layers'], vocab_size=MODEL['vocab_size'],
      embed_dim=MODEL['hidden_size'], hidden_dim=MODEL['intermediate_size'],
      num_heads=MODEL['num_attention_heads'], head_dim=h,
      num_kv_heads=MODEL['num_key_value_heads'], rope_theta=int(MODEL['rope_theta']),
      norm_eps=1e-6)
  with mesh:
    model = llama_params.create_model_from_safe_tensors(ckpt, config, mesh,
                                                        dtype=jax.numpy.float32)
  tok = transformers.AutoTokenizer.from_pretrained(ckpt)
  opt = optax.chain(optax.clip_by_global_norm(1.0),
                    optax.adamw(LEARNING_RATE, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0))
  p, n = spec['prompt_len'], spec['new_tokens']
  cluster = rl_cluster_lib.RLCluster(
      actor=model, reference=None, tokenizer=tok,
      cluster_config=rl_cluster_lib.ClusterConfig(
          role_to_mesh={r: mesh for r in (rl_cluster_lib.Role.ACTOR,
                                          rl_cluster_lib.Role.REFERENCE,
                                          rl_cluster_lib.Role.ROLLOUT)},
          rollout_engine='vanilla', offload_to_cpu=False,
          training_config=rl_cluster_lib.RLTrainingConfig(
              actor_optimizer=opt, eval_every_n_steps=10**9, max_steps=10**6),
          rollout_config=base_rollout.RolloutConfig(
              max_tokens_to_generate=n, max_prompt_length=p, kv_cache_size=p + n + 8,
              temperature=1.0, top_p=1.0, top_k=None, eos_tokens=[2])))
  learner = grpo_learner.GRPOLearner(
      rl_cluster=cluster,
      algo_config=grpo_learner.GRPOConfig(num_generations=spec['group_size'],
                                          num_iterations=1, beta=0.0, epsilon=0.2),
      reward_fns=lambda prompts, completions, **kw: [reward(c) for c in completions])
  texts = np.asarray(prompt_texts(spec['num_prompts'], p))
  permits, results, clock = queue.Queue(), queue.Queue(), {'rollout': 0.0}

  def batches():
    while True:
      permits.get()
      clock['rollout'], clock['t0'] = 0.0, time.perf_counter()
      yield {'prompts': texts}

  generate, update = cluster.generate, cluster.update_actor

  def timed_generate(*a, **kw):
    t0 = time.perf_counter()
    out = generate(*a, **kw)
    clock['rollout'] += time.perf_counter() - t0
    return out

  def timed_update(*a, **kw):
    update(*a, **kw)
    jax.block_until_ready(nnx_state(cluster.actor_trainer.model))
    total = time.perf_counter() - clock['t0']
    results.put({'rollout': clock['rollout'], 'update': total - clock['rollout'],
                 'step': total})

  cluster.generate, cluster.update_actor = timed_generate, timed_update
  return _threaded(lambda: learner.train(batches()), permits, results), None


def nnx_state(model):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return nnx.state(model)


def _threaded(train, permits, results):
  """`step()`: lets `train` (run in a daemon thread) take one step and returns its times."""
  import threading  # pylint: disable=g-import-not-at-top

  def run():
    try:
      train()
    except BaseException as e:  # pylint: disable=broad-except
      results.put(e)

  threading.Thread(target=run, daemon=True).start()

  def step():
    permits.put(True)
    out = results.get()
    if isinstance(out, BaseException):
      raise out
    return out

  return step


SYSTEMS = {'rljax': _rljax, 'trl': _trl, 'tunix': _tunix}


# -------------------------------------------------------------------------- processes


def _limit_threads(threads: int) -> None:
  """This process uses `threads` CPUs: its affinity, and intra-op threads of torch / XLA."""
  cpus = sorted(os.sched_getaffinity(0))
  os.sched_setaffinity(0, cpus[:threads])
  for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ[var] = str(threads)
  # OpenMP's default active wait spins torch's idle intra-op threads; on a machine whose cores
  # other processes also use, each of generate's many small ops then waits for a descheduled
  # spinner (measured: 16 new tokens for 64 rows, 2 threads, load ~5 on 2 cores: 6.7 s active,
  # 0.40 s passive, 0.37 s with 1 thread). JAX does not use OpenMP.
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads)
  except ImportError:
    pass


def _serve(name, conn, ckpt, spec, threads):
  """A system's process: builds it, then runs `conn.recv()` steps per request (0: stop)."""
  try:
    _limit_threads(threads)
    from experiments import malloc_defaults  # pylint: disable=g-import-not-at-top
    system, devices = _system_devices(name)
    if system == 'rljax':  # what `python -m experiments.launch` does before JAX starts
      from experiments import xla_defaults  # pylint: disable=g-import-not-at-top
      xla_defaults.apply()
    if (system == 'rljax' and not os.environ.get(_PLAIN_MALLOC)) or os.environ.get(_PEER_MALLOC):
      os.environ[malloc_defaults.ENV_VAR] = '1'
      malloc_defaults.apply()  # before JAX is imported (set_cpu_devices imports it)
    if system == 'rljax':
      xla_defaults.set_cpu_devices(devices)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
      build = SYSTEMS[system]
      step, extra = build(ckpt, spec, workdir, devices) if system == 'rljax' else build(
          ckpt, spec, workdir)
      conn.send({'setup': time.perf_counter() - t0})
      while True:
        k = conn.recv()
        if not k:
          break
        conn.send([_with_cpu_time(step) for _ in range(k)])
      peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
      count = sys.modules['jax'].local_device_count() if system == 'rljax' else None
      conn.send({'peak_rss_mib': peak, 'extra': extra() if extra else None,
                 'devices': count})  # rljax's XLA:CPU device count, for the JSON
  except BaseException as e:  # pylint: disable=broad-except
    conn.send({'error': f'{type(e).__name__}: {e}',
               'trace': traceback.format_exc(limit=6)})
  conn.close()
  os._exit(0)  # pylint: disable=protected-access  (TRL's training thread never returns)


def _with_cpu_time(step):
  """`step()`'s times, and the CPU seconds and minor page faults of this process it took."""
  c0, u0 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
  out = step()
  u1 = resource.getrusage(resource.RUSAGE_SELF)
  return dict(out, cpu=time.process_time() - c0, faults=u1.ru_minflt - u0.ru_minflt)


class _System:
  """The parent's handle of one system's process."""

  def __init__(self, name, ckpt, spec, threads):
    self.name, self.error, self.steps, self.info = name, None, [], {}
    self.conn, child = mp.get_context('spawn').Pipe()
    self.proc = mp.get_context('spawn').Process(target=_serve,
                                                args=(name, child, ckpt, spec, threads))
    self.proc.start()
    self._check(self.conn.recv())

  def _check(self, msg):
    if isinstance(msg, dict) and 'error' in msg:
      self.error = msg['error']
      print(f'{self.name}: cannot run here: {msg["error"]}\n{msg["trace"]}', file=sys.stderr)
      return None
    return msg

  def run(self, k: int, keep: bool = True):
    if self.error:
      return
    self.conn.send(k)
    out = self._check(self.conn.recv())
    if out is not None and keep:
      self.steps.append(out)
    elif out is not None:
      self.info['warmup'] = out

  def stop(self):
    if not self.error:
      self.conn.send(0)
      out = self._check(self.conn.recv())
      self.info.update(out or {})
    self.proc.join(timeout=60)
    if self.proc.is_alive():
      self.proc.kill()


# ----------------------------------------------------------------------------- driver


def run_setting(name: str, spec: dict, args) -> dict:
  """Builds the checkpoint, starts the systems, warms them up and times alternating blocks."""
  with tempfile.TemporaryDirectory() as ckpt:
    make_checkpoint(ckpt, max_len=spec['prompt_len'] + spec['new_tokens'] + 16)
    spec = dict(spec, long=name == 'long')
    systems = [_System(s, ckpt, spec, args.threads) for s in args.rljax + args.peers]
    for s in systems:
      s.run(args.warmup, keep=False)
    for b in range(args.blocks):
      order = systems[b % len(systems):] + systems[:b % len(systems)]
      for s in order:
        s.run(args.steps)
    for s in systems:
      s.stop()
  return {s.name: summarize(s) for s in systems}


def summarize(s: _System) -> dict:
  if s.error:
    return {'error': s.error}
  if not s.steps:
    return {'error': 'no timed step'}
  steps = [x for block in s.steps for x in block]
  med = lambda key: statistics.median(x[key] for x in steps)
  blocks = [statistics.median(x['step'] for x in block) for block in s.steps]
  warm = s.info.get('warmup') or []
  out = {'step': med('step'), 'block_min': min(blocks), 'block_max': max(blocks),
         'rollout': med('rollout'), 'update': med('update'), 'cpu': med('cpu'),
         'faults': med('faults'),
         'compile': (warm[0]['step'] - med('step')) if warm else float('nan'),
         'peak_rss_mib': s.info.get('peak_rss_mib', float('nan')),
         'devices': s.info.get('devices')}
  if s.info.get('extra'):
    out['rollout_variants'] = s.info['extra']
  return out


def report(name: str, spec: dict, results: dict) -> None:
  """Prints one setting's table: a row per system, a speed-up column per rljax system."""
  print(f'\n== {name}: {spec["num_prompts"]} prompts x {spec["group_size"]} completions, '
        f'{spec["prompt_len"]}-token prompts, {spec["new_tokens"]} new tokens')
  bases = {s: r['step'] for s, r in results.items()
           if _system_devices(s)[0] == 'rljax' and 'step' in r}
  print(f'{"system":8s} {"step s (block range)":>24s} {"rollout s":>10s} {"update s":>9s} '
        f'{"cpu s":>6s} {"faults":>9s} {"compile s":>10s} {"peak MiB":>9s} ' +
        ' '.join(f'{"vs " + b:>10s}' for b in bases))
  for system, r in results.items():
    if 'error' in r:
      print(f'{system:8s} not run: {r["error"]}')
      continue
    ratios = ' '.join(f'{r["step"] / t:9.2f}x' if system not in bases else f'{"":10s}'
                      for t in bases.values())
    rng = f'{r["step"]:.3f} ({r["block_min"]:.3f}-{r["block_max"]:.3f})'
    print(f'{system:8s} {rng:>24s} {r["rollout"]:10.3f} {r["update"]:9.3f} {r["cpu"]:6.2f} '
          f'{r["faults"]:9.0f} {r["compile"]:10.2f} {r["peak_rss_mib"]:9.0f} {ratios}'.rstrip())
    for variant, t in (r.get('rollout_variants') or {}).items():
      print(f'{"":8s} sampler alone, {variant}: {t:.3f} s')


def main(argv=None):
  args = _parse_args(argv)
  if args.ynn_fusion:  # inherited by the spawned processes, which import JAX themselves
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {YNN_FLAG}'.strip()
  elif args.plain_xla:
    os.environ.setdefault('XLA_FLAGS', '')
  if args.peer_malloc:  # read by the spawned processes (_serve)
    os.environ[_PEER_MALLOC] = '1'
  if args.plain_malloc:
    os.environ[_PLAIN_MALLOC] = '1'
  names = tuple(SETTINGS) if args.setting == 'all' else (args.setting,)
  everything = {}
  for name in names:
    spec = QUICK if args.quick else SETTINGS[name]
    everything[name] = run_setting(name, spec, args)
    report(name, spec, everything[name])
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(everything, f, indent=1)
  failed = [n for n, r in everything.items()
            if any('error' in r.get(s, {'error': 1}) for s in args.rljax)]
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
