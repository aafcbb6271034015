r"""Compares estimators on one task and budget: a table and a plot.

  python -m experiments.compare \
      --flagfile=experiments/configs/compare_arithmetic.flags --root=/tmp/compare \
      --estimators=reinforce,grpo,dr_grpo,dapo,gspo,cispo,topr,opmd,copg,clip_cov,kl_cov \
      --seeds=0,1

`--estimators` defaults to every entry of the registry (`rljax.train.estimators.ESTIMATORS`)
except aliases. An entry may carry suffixes that change how its anchor or correction is set:
``+tis`` / ``+mis`` (``--is_correction``, the rollout-vs-trainer importance weights) and
``+behavior`` (``--old_logp=sampler``: the proximal ratio is to the sampler's log-probs), e.g.
``grpo+tis,cispo+behavior``; every other flag stays the sweep's.

For each seed the warm start runs once (`<root>/warmstart_seed<s>`, RL steps 0); then every
estimator starts RL from that same policy (`<root>/<estimator>_seed<s>`, via
`--init_from_workdir`), with every other flag equal. Each run resumes if interrupted, so the
command can be re-run to finish a partial sweep. Outputs in `<root>`:

* `table.md` / `table.csv`: per estimator (mean ± std over seeds) the held-out greedy accuracy
  and sampled pass@1 after RL (and their change from the warm start), reward AUC (mean training
  reward over the RL steps), policy entropy at the end (mean over the last 10% of steps), and
  the RL wall time;
* `curves.png`: training reward and held-out sampled pass@1 against the RL step.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence

import numpy as np
from absl import app
from absl import flags

from experiments import config as config_lib

from rljax.train import estimators as est_lib

# Every estimator of the registry, aliases (e.g. 'ppo' for 'grpo') left out.
DEFAULT_ESTIMATORS = tuple(n for n, e in est_lib.ESTIMATORS.items() if e.alias_of is None)


@dataclasses.dataclass
class RunResult:
  estimator: str
  seed: int
  before: dict[str, float]
  after: dict[str, float]
  reward_auc: float
  final_entropy: float
  wall_time: float
  workdir: str


def _read(workdir: str):
  from rljax.train.metrics import read_jsonl  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  records = [r for r in read_jsonl(workdir) if 'reward_mean' in r]
  return summary, records


# Suffixes of an --estimators entry: the Config fields each sets.
VARIANTS = {'tis': {'is_correction': 'tis'}, 'mis': {'is_correction': 'mis'},
            'behavior': {'old_logp': 'sampler'}}


def run_config(base: config_lib.Config, name: str) -> config_lib.Config:
  """`base` with the estimator (and suffixes) of the --estimators entry `name`, validated."""
  estimator, *suffixes = name.split('+')
  fields = {'estimator': estimator}
  for suffix in suffixes:
    if suffix not in VARIANTS:
      raise ValueError(f'--estimators: {name!r} has suffix +{suffix}; valid suffixes: '
                       f'{["+" + v for v in VARIANTS]}')
    fields.update(VARIANTS[suffix])
  if estimator not in est_lib.ESTIMATORS:
    raise ValueError(f'--estimators: {estimator!r} is not an estimator; valid values: '
                     f'{list(est_lib.ESTIMATORS)}')
  try:
    return base.replace(**fields).validate()
  except ValueError as e:
    raise ValueError(f'--estimators: {name!r}: {e}') from None


def run_sweep(base: config_lib.Config, root: str, estimators: Sequence[str],
              seeds: Sequence[int], *, log=print) -> list[RunResult]:
  """Runs (or resumes) the warm starts and the estimator runs; returns one result per run."""
  from experiments.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
  os.makedirs(root, exist_ok=True)
  results = []
  for seed in seeds:
    warm = os.path.join(root, f'warmstart_seed{seed}')
    if base.sft_steps and not os.path.exists(os.path.join(warm, 'summary.json')):
      log(f'== warm start, seed {seed}: {warm}')
      train_and_evaluate(base.replace(seed=seed, rl_steps=0).validate(), warm)
    for name in estimators:
      workdir = os.path.join(root, f'{name}_seed{seed}')
      if not os.path.exists(os.path.join(workdir, 'summary.json')):
        log(f'== {name}, seed {seed}: {workdir}')
        cfg = run_config(base, name).replace(
            seed=seed, sft_steps=0,
            init_from_workdir=warm if base.sft_steps else base.init_from_workdir)
        t0 = time.perf_counter()
        train_and_evaluate(cfg.validate(), workdir)
        log(f'   {name} seed {seed}: {time.perf_counter() - t0:.0f} s')
      summary, records = _read(workdir)
      entropies = [r['entropy'] for r in records]
      tail = max(1, len(entropies) // 10)
      results.append(RunResult(
          estimator=name, seed=seed, before=summary['before'], after=summary['after'],
          reward_auc=float(np.mean([r['reward_mean'] for r in records])),
          final_entropy=float(np.mean(entropies[-tail:])),
          wall_time=float(summary['wall_time']), workdir=workdir))
  return results


COLUMNS = (
    ('greedy acc', lambda r: r.after['eval/greedy_accuracy']),
    ('Δ greedy', lambda r: r.after['eval/greedy_accuracy'] - r.before['eval/greedy_accuracy']),
    ('sampled pass@1', lambda r: r.after['eval/sampled_pass@1']),
    ('Δ pass@1', lambda r: r.after['eval/sampled_pass@1'] - r.before['eval/sampled_pass@1']),
    ('reward AUC', lambda r: r.reward_auc),
    ('entropy (end)', lambda r: r.final_entropy),
    ('wall time (s)', lambda r: r.wall_time),
)


def write_table(results: Sequence[RunResult], root: str) -> str:
  """Writes table.md and table.csv (mean ± std over seeds); returns the markdown."""
  names = list(dict.fromkeys(r.estimator for r in results))
  seeds = sorted({r.seed for r in results})
  before = [r.before for r in results]
  lines = [f'Held-out results after RL ({len(seeds)} seed(s): {seeds}; mean ± std). Warm start: '
           f'greedy {np.mean([b["eval/greedy_accuracy"] for b in before]):.3f}, sampled pass@1 '
           f'{np.mean([b["eval/sampled_pass@1"] for b in before]):.3f}.', '',
           '| estimator | ' + ' | '.join(c for c, _ in COLUMNS) + ' |',
           '| --- |' + ' ---: |' * len(COLUMNS)]
  rows = []
  for name in names:
    runs = [r for r in results if r.estimator == name]
    cells, raw = [], {'estimator': name}
    for col, fn in COLUMNS:
      vals = np.array([fn(r) for r in runs], np.float64)
      fmt = '{:.0f}' if 'time' in col else '{:+.3f}' if col.startswith('Δ') else '{:.3f}'
      cell = fmt.format(vals.mean())
      if len(vals) > 1:
        cell += ' ± ' + fmt.format(vals.std(ddof=1)).lstrip('+')
      cells.append(cell)
      raw[col] = float(vals.mean())
      raw[col + ' std'] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    rows.append(raw)
  text = '\n'.join(lines) + '\n'
  with open(os.path.join(root, 'table.md'), 'w') as f:
    f.write(text)
  with open(os.path.join(root, 'table.csv'), 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  return text


def moving_average(values, window: int) -> np.ndarray:
  """Centred moving average of `values` over `window` points, as long as its input.

  Near the ends the window holds fewer points, and each value is the mean of the points it
  holds (not a sum divided by `window`, which would pull the ends towards zero).
  """
  values = np.asarray(values, np.float64)
  if window <= 1 or values.size == 0:
    return values
  kernel = np.ones(window)
  counts = np.convolve(np.ones_like(values), kernel, mode='same')
  return np.convolve(values, kernel, mode='same') / counts


def plot_results(results: Sequence[RunResult], root: str) -> str:
  """Training reward and held-out sampled pass@1 per estimator (mean over seeds) vs RL step."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from rljax.train.metrics import read_jsonl  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for name in dict.fromkeys(r.estimator for r in results):
    curves = {'reward_mean': [], 'eval/sampled_pass@1': []}
    for r in (r for r in results if r.estimator == name):
      recs = read_jsonl(r.workdir)
      for key in curves:
        pts = [(x['step'], x[key]) for x in recs if key in x]
        curves[key].append(pts)
    for ax, key in zip(axes, curves):
      n = min(len(c) for c in curves[key])
      steps = [p[0] for p in curves[key][0][:n]]
      vals = np.mean([[p[1] for p in c[:n]] for c in curves[key]], axis=0)
      if key == 'reward_mean' and len(vals) > 5:  # light smoothing of the noisy batch reward
        vals = moving_average(vals, max(1, len(vals) // 20))
      ax.plot(steps, vals, 'o-' if key.startswith('eval') else '-', label=name, markersize=3,
              linewidth=1.2)
  for ax, title in zip(axes, ('training reward (batch mean)', 'held-out sampled pass@1')):
    ax.set_title(title)
    ax.set_xlabel('RL step')
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7, ncol=2)
  fig.tight_layout()
  out = os.path.join(root, 'curves.png')
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


flags.DEFINE_string('root', None, 'Directory holding every run of the sweep and the outputs.')
flags.DEFINE_list('estimators', list(DEFAULT_ESTIMATORS), 'Estimators to compare.')
flags.DEFINE_list('seeds', ['0'], 'Seeds (each gets its own warm start).')
config_lib.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected positional arguments: {argv[1:]}')
  if not FLAGS.root:
    raise app.UsageError('--root is required')
  try:
    base = config_lib.config_from_flags(FLAGS)
    for name in FLAGS.estimators:
      run_config(base, name)
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError as e:
    sys.stderr.write(f'FATAL Flags parsing error: {e}\n')
    sys.exit(2)
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  try:
    results = run_sweep(base, FLAGS.root, FLAGS.estimators, seeds)
  except config_lib.FlagValueError as e:
    sys.stderr.write(f'FATAL {e}\n')
    sys.exit(2)
  print(write_table(results, FLAGS.root))
  print(plot_results(results, FLAGS.root))


if __name__ == '__main__':
  app.run(main)
