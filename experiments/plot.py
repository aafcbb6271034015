r"""Learning curves from one or more workdirs, as PNG.

  python -m experiments.plot --workdirs=/tmp/a,/tmp/b --out=/tmp/curves.png \
      [--metrics=reward_mean,eval/sampled_pass@1] [--labels=grpo,gspo]

Each workdir's `metrics.jsonl` is read; one panel per metric, one line per workdir (the label is
the workdir's basename unless `--labels` is given). Steps are the run's global step (warm-start
steps first, then RL steps); a dashed vertical line marks the end of the warm start.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

from absl import app
from absl import flags

from rljax.train.metrics import read_jsonl

DEFAULT_METRICS = ('reward_mean', 'eval/sampled_pass@1', 'eval/greedy_accuracy', 'entropy',
                   'kl_ref', 'response_length')


def _series(records, key):
  xs, ys = [], []
  for r in records:
    v = r.get(key)
    if isinstance(v, (int, float)) and math.isfinite(v):
      xs.append(r['step'])
      ys.append(float(v))
  return xs, ys


def _sft_steps(workdir: str) -> int | None:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f).get('sft_steps')


def plot_workdirs(workdirs: Sequence[str], out: str, *,
                  metrics: Sequence[str] = DEFAULT_METRICS,
                  labels: Sequence[str] | None = None, title: str | None = None) -> str:
  """Writes a PNG with one panel per metric and one line per workdir; returns `out`.

  Metrics absent from every workdir are skipped; raises ValueError if nothing can be drawn.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  labels = list(labels) if labels else [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(labels) != len(workdirs):
    raise ValueError(f'{len(labels)} labels for {len(workdirs)} workdirs')
  runs = [read_jsonl(w) for w in workdirs]
  present = [m for m in metrics if any(_series(r, m)[0] for r in runs)]
  if not present:
    raise ValueError(f'none of the metrics {list(metrics)} is in {list(workdirs)}')
  cols = min(3, len(present))
  rows = -(-len(present) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
  for ax, metric in zip(axes.flat, present):
    for records, label, workdir in zip(runs, labels, workdirs):
      xs, ys = _series(records, metric)
      if xs:
        style = 'o-' if metric.startswith('eval/') else '-'
        ax.plot(xs, ys, style, label=label, markersize=3, linewidth=1.2)
      sft = _sft_steps(workdir)
      if sft:
        ax.axvline(sft, color='gray', linestyle='--', linewidth=0.8)
    ax.set_title(metric, fontsize=10)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(present):]:
    ax.axis('off')
  axes.flat[0].legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


_WORKDIRS = flags.DEFINE_list('workdirs', None, 'Comma-separated workdirs to plot.')
_OUT = flags.DEFINE_string('out', 'curves.png', 'Output PNG path.')
_METRICS = flags.DEFINE_list('metrics', list(DEFAULT_METRICS), 'Metrics to plot (one panel each).')
_LABELS = flags.DEFINE_list('labels', None, 'Legend labels (default: workdir basenames).')


def main(argv):
  del argv
  if not _WORKDIRS.value:
    raise app.UsageError('--workdirs is required')
  path = plot_workdirs(_WORKDIRS.value, _OUT.value, metrics=_METRICS.value,
                       labels=_LABELS.value)
  print(path)


if __name__ == '__main__':
  app.run(main)
