"""The estimator registry: every estimator the train step and the launcher can run, in one place.

An `EstimatorSpec` holds the `rljax` loss function itself, which `LossInputs` fields it takes
positionally, its preset (advantage mode, aggregation, hyperparameters, with their paper or
library source), the launcher flags it reads (`Flag`: flag name -> loss keyword) and its
constraints (minimum group size, whether rollout-vs-trainer IS weights apply). The train step
(`rljax.train.train_step`), the launcher's `--estimator` choices and per-estimator flags
(`experiments/config.py`), the comparison script (`experiments/compare.py`) and the README's
estimator table (`estimator_table()`) all read `ESTIMATORS`: adding an estimator to the launcher is
one entry here.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp

import rljax

ADVANTAGE_MODES = ('group', 'group-none', 'group-batch-std', 'group-batch-raw-std', 'rloo',
                   'global', 'raw', 'signed', 'given')
# Advantage modes that subtract a baseline over the other completions of the prompt.
GROUP_BASELINE_MODES = ('group', 'group-none', 'group-batch-std', 'group-batch-raw-std', 'rloo',
                        'global')
IS_CORRECTIONS = ('none', 'tis', 'mis')
OLD_LOGP_SOURCES = ('trainer', 'sampler')


@dataclasses.dataclass(frozen=True)
class LossInputs:
  """What a loss may use (all [B, L] aligned with tokens, or [B]).

  Attributes:
    logp: log π_θ of the sampled tokens (carries the gradient).
    old_logp: proximal anchor (trainer's log-probs before this batch's updates, or the
      sampler's).
    behavior_logp: log-probs recorded by the sampler.
    ref_logp: frozen reference policy's log-probs (zeros if no reference is used).
    advantages: [B] or [B, L] advantages.
    rewards: [B] raw rewards.
    mask: completion mask.
    key: PRNG key (Clip-Cov's random token selection).
    group_size: completions per prompt (static).
    is_weights: None or [B, L] rollout-vs-trainer importance weights (TIS / MIS), passed as the
      loss's `is_weights` where it has one, else multiplied into the advantages.
  """

  logp: jax.Array
  old_logp: jax.Array
  behavior_logp: jax.Array
  ref_logp: jax.Array
  advantages: jax.Array
  rewards: jax.Array
  mask: jax.Array
  key: jax.Array
  group_size: int
  is_weights: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class Flag:
  """A launcher flag (`--name`, default unset: the preset) that sets one loss keyword.

  Attributes:
    name: the flag and `experiments.config.Config` field.
    keyword: the loss function's keyword argument it sets.
    help: one line for `--help`.
    kind: float or str.
    lo, hi, lo_open: bounds checked by `Config.validate`.
    choices: valid values (str flags), or None.
  """

  name: str
  keyword: str
  help: str
  kind: type = float
  lo: Optional[float] = None
  hi: Optional[float] = None
  lo_open: bool = False
  choices: Optional[tuple[str, ...]] = None


EPSILON_LOW = Flag('epsilon_low', 'epsilon_low', 'Lower clip range (preset if unset).', lo=0.0)
EPSILON_HIGH = Flag('epsilon_high', 'epsilon_high', 'Upper clip range (preset if unset).',
                    lo=0.0)
DUAL_CLIP = Flag('dual_clip', 'dual_clip', 'Dual-clip constant c > 1 (unset: off).', lo=1.0,
                 lo_open=True)
PPO_FLAGS = (EPSILON_LOW, EPSILON_HIGH, DUAL_CLIP)


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
  """A named estimator: its loss, preset, flags and constraints.

  Attributes:
    name: the `--estimator` value.
    loss: the `rljax` loss function.
    inputs: the `LossInputs` fields passed positionally, in the loss's order (each names the
      loss's parameter, except that a loss of `rewards` may be given the `advantages`: TOPR's
      preset passes its ±1 rewards as the ``signed`` advantages).
    advantage: preset advantage mode (one of `ADVANTAGE_MODES`).
    aggregation: preset aggregation (None for losses without one, e.g. CoPG's pair loss).
    presets: preset keyword arguments of the loss.
    source: where the preset comes from (paper, library).
    flags: the launcher flags the estimator reads.
    description: one line for `--help` and the README.
    min_group_size: fewest completions per prompt the loss is defined for.
    needs_ref: whether the loss itself uses `ref_logp` (the reference is then always scored).
    own_ratio: whether the loss weights by its own ratio to the sampling distribution (TOPR), so
      rollout-vs-trainer IS weights would correct the same mismatch twice.
    alias_of: the estimator this one duplicates under another name (left out of comparisons).
  """

  name: str
  loss: Callable[..., Any]
  inputs: tuple[str, ...]
  advantage: str
  aggregation: str | None
  presets: Mapping[str, Any]
  source: str
  flags: tuple[Flag, ...] = ()
  description: str = ''
  min_group_size: int = 1
  needs_ref: bool = False
  own_ratio: bool = False
  alias_of: str | None = None

  @property
  def keywords(self) -> frozenset[str]:
    """The loss's keyword arguments (its parameters after the positional inputs)."""
    return frozenset(list(inspect.signature(self.loss).parameters)[len(self.inputs):])

  @property
  def supports_is(self) -> bool:
    """Rollout-vs-trainer IS weights apply to losses of advantages (not of raw rewards, whose
    own construction the weights would change, nor to a loss with its own sampling ratio)."""
    return 'advantages' in self.inputs and not self.own_ratio

  def __call__(self, x: LossInputs, kwargs: Mapping[str, Any]):
    """The loss on `x` with `kwargs`; IS weights go to `is_weights` or into the advantages."""
    kwargs = dict(kwargs)
    fields = {f: getattr(x, f) for f in self.inputs}
    if x.is_weights is not None:
      if 'is_weights' in self.keywords:
        kwargs['is_weights'] = x.is_weights
      else:
        adv = fields['advantages']
        fields['advantages'] = (adv[:, None] if adv.ndim == 1 else adv) * x.is_weights
    return self.loss(*fields.values(), **kwargs)


_ADV = ('logp', 'old_logp', 'advantages', 'mask')


def _spec(name, loss, inputs, advantage, aggregation, description, *, source, flags=(),
          presets=None, **options):
  return EstimatorSpec(name=name, loss=loss, inputs=inputs, advantage=advantage,
                       aggregation=aggregation, presets=dict(presets or {}), source=source,
                       flags=tuple(flags), description=description, **options)


_CLIP_02 = {'epsilon_low': 0.2, 'epsilon_high': 0.2}
_GRPO = _spec('grpo', rljax.ppo_clip_loss, _ADV, 'group', 'token-mean',
              'GRPO: PPO clip with group-normalised advantages', flags=PPO_FLAGS,
              presets=_CLIP_02, source='GRPO (arXiv 2402.03300); eps 0.2/0.2 as verl and TRL')

ESTIMATORS: dict[str, EstimatorSpec] = {
    s.name: s for s in (
        _spec('reinforce', rljax.reinforce_loss, ('logp', 'advantages', 'mask'), 'rloo',
              'seq-mean-token-sum', 'REINFORCE with the leave-one-out (RLOO) baseline',
              source='RLOO, Ahmadian et al. 2024 (arXiv 2402.14740)'),
        _GRPO,
        dataclasses.replace(_GRPO, name='ppo', alias_of='grpo',
                            description='PPO clip objective (critic-free, group advantages)',
                            source='PPO (arXiv 1707.06347); eps 0.2 of the paper'),
        _spec('dr_grpo', rljax.ppo_clip_loss, _ADV, 'group-none', 'seq-mean-token-sum-norm',
              'Dr. GRPO: no std scaling, constant length normaliser', flags=PPO_FLAGS,
              presets=_CLIP_02, source='Dr. GRPO (arXiv 2503.20783)'),
        _spec('dapo', rljax.ppo_clip_loss, _ADV, 'group', 'token-mean',
              'DAPO clip-higher (eps_high 0.28), token-mean', flags=PPO_FLAGS,
              presets={'epsilon_low': 0.2, 'epsilon_high': 0.28},
              source='DAPO (arXiv 2503.14476), eps 0.2/0.28'),
        _spec('gspo', rljax.ppo_clip_loss, _ADV, 'group', 'seq-mean-token-mean',
              'GSPO: sequence-level (length-normalised) ratio clipping', flags=PPO_FLAGS,
              presets={'epsilon_low': 3e-4, 'epsilon_high': 4e-4, 'level': 'sequence'},
              source='GSPO (arXiv 2507.18071), eps 3e-4/4e-4'),
        _spec('cispo', rljax.cispo_loss, _ADV, 'group', 'token-mean',
              'CISPO: clipped stop-gradient IS weight times REINFORCE',
              flags=(EPSILON_LOW, EPSILON_HIGH), presets={'epsilon_high': 0.28},
              source='MiniMax-M1 (arXiv 2506.13585); the paper publishes no epsilon_high, '
              "0.28 is Trinity-RFT's (cap 1.28), no lower bound"),
        _spec('topr', rljax.topr_loss, ('logp', 'behavior_logp', 'advantages', 'mask'),
              'signed', 'seq-mean-token-mean',
              'TOPR: tapered off-policy REINFORCE on +-1 rewards',
              flags=(Flag('topr_baseline', 'baseline', 'TOPR reward baseline (preset if unset).'),),
              own_ratio=True,
              source='TOPR (arXiv 2503.14286): +-1 rewards (2r - 1 of a pass/fail verifier), '
              'baseline 0, trajectory ratio to the sampling distribution (so it corrects the '
              'rollout-vs-trainer mismatch itself)'),
        _spec('copg', rljax.copg_loss, ('logp', 'ref_logp', 'rewards', 'mask', 'group_size'),
              'raw', None, 'CoPG: contrastive policy gradient over all pairs of a group',
              flags=(Flag('copg_beta', 'beta', 'CoPG beta (preset if unset).', lo=0.0,
                          lo_open=True),),
              min_group_size=2, needs_ref=True,
              source='CoPG (arXiv 2406.19185); regularises towards the reference policy, '
              'pi* ∝ pi_ref exp(R / beta)'),
        _spec('opmd', rljax.opmd_loss, ('logp', 'old_logp', 'rewards', 'mask', 'group_size'),
              'raw', 'seq-mean-token-sum',
              'OPMD: group REINFORCE plus squared log-ratio to the old policy',
              flags=(Flag('opmd_tau', 'tau', 'OPMD tau, weight of the squared log-ratio '
                          '(preset if unset).', lo=0.0, lo_open=True),),
              source='Kimi k1.5 OPMD as in the REC paper (arXiv 2509.24203)'),
        _spec('asymre', rljax.asymre_loss, ('logp', 'rewards', 'mask', 'group_size'), 'raw',
              'token-mean', 'AsymRE: REINFORCE with a baseline shifted down',
              flags=(Flag('asymre_shift', 'shift', 'AsymRE baseline shift delta (preset if '
                          'unset).'),),
              source='AsymRE (arXiv 2506.20520)'),
        _spec('rec', rljax.rec_loss, _ADV, 'group-none', 'token-mean',
              'REC: REINFORCE with clipping masks (one-side, two-side, ring)',
              flags=(Flag('rec_variant', 'variant', 'REC mask variant (empty: preset).', kind=str,
                          choices=tuple(rljax.REC_VARIANTS)), EPSILON_LOW, EPSILON_HIGH),
              source='REC variants (arXiv 2509.24203)'),
        _spec('clip_cov', rljax.clip_cov_loss, _ADV + ('key',), 'group', 'token-mean',
              'Clip-Cov: detach gradients of high-covariance tokens',
              flags=(Flag('clip_cov_ratio', 'clip_ratio', 'Clip-Cov fraction of tokens '
                          'detached.', lo=0.0, hi=1.0),
                     Flag('clip_cov_lower', 'cov_lower', 'Clip-Cov covariance lower bound.'),
                     Flag('clip_cov_upper', 'cov_upper', 'Clip-Cov covariance upper bound.'),
                     EPSILON_LOW, EPSILON_HIGH),
              source='The Entropy Mechanism of RL for reasoning LMs (arXiv 2505.22617)'),
        _spec('kl_cov', rljax.kl_cov_loss, _ADV, 'group', 'token-mean',
              'KL-Cov: KL penalty on high-covariance tokens',
              flags=(Flag('kl_cov_ratio', 'kl_cov_ratio', 'KL-Cov fraction of tokens '
                          'penalised.', lo=0.0, hi=1.0),
                     Flag('kl_cov_coef', 'kl_coef', 'KL-Cov penalty coefficient.', lo=0.0)),
              source='The Entropy Mechanism of RL for reasoning LMs (arXiv 2505.22617)'),
    )
}


def get_estimator(name: str) -> EstimatorSpec:
  if name not in ESTIMATORS:
    raise ValueError(f'estimator must be one of {sorted(ESTIMATORS)}, got {name!r}')
  return ESTIMATORS[name]


def estimator_flags() -> dict[str, Flag]:
  """Every flag some estimator reads, by name (a flag shared by several is one `Flag`)."""
  out: dict[str, Flag] = {}
  for spec in ESTIMATORS.values():
    for flag in spec.flags:
      if out.setdefault(flag.name, flag) != flag:
        raise ValueError(f'estimators declare flag --{flag.name} differently')
  return out


def estimator_table() -> str:
  """The README's estimator table (markdown), generated from `ESTIMATORS`."""
  rows = ['| `--estimator` | loss | advantages | aggregation | preset | flags | source |',
          '| --- | --- | --- | --- | --- | --- | --- |']
  for s in ESTIMATORS.values():
    preset = ', '.join(f'{k}={v}' for k, v in s.presets.items()) or 'the loss defaults'
    flag_names = ', '.join(f'`--{f.name}`' for f in s.flags) or '-'
    rows.append(f'| {s.name} | `rljax.{s.loss.__name__}` | {s.advantage} | '
                f'{s.aggregation or "-"} | {preset} | {flag_names} | {s.source} |')
  return '\n'.join(rows)


def compute_advantages(rewards: jax.Array, group_size: int, mode: str) -> jax.Array:
  """[B] advantages from [B] rewards in contiguous groups, by mode.

  * ``group``: (r - group mean) / (group std + 1e-6) (GRPO).
  * ``group-none``: r - group mean (Dr. GRPO).
  * ``group-batch-std``: group mean removed, batch std (REINFORCE++-baseline).
  * ``group-batch-raw-std``: group mean removed, divided by the std of the raw rewards over the
    batch + 1e-6 (TRL's ``scale_rewards='batch'``, which adds 1e-4; Trinity-RFT's batch level;
    Lite PPO).
  * ``rloo``: leave-one-out mean baseline.
  * ``global``: the same as ``group-none`` for contiguous fixed groups (Reinforce-Ada's
    per-prompt mean over all samples of the prompt in the batch).
  * ``raw``: the rewards themselves (for losses with their own baseline, e.g. CoPG, OPMD).
  * ``signed``: 2r - 1, which maps a pass/fail verifier's {0, 1} to the ±1 rewards of the TOPR
    paper (arXiv 2503.14286, §4), so failures carry negative advantages.
  * ``given``: computed outside the update (e.g. Reinforce-Ada's baseline over every sample
    drawn for the prompt) and passed in `TrainBatch.advantages`; not handled here.
  """
  if mode not in ADVANTAGE_MODES or mode == 'given':
    raise ValueError(f'advantage must be one of {ADVANTAGE_MODES[:-1]} here, got {mode!r}')
  if mode == 'group':
    return rljax.group_advantages(rewards, group_size, scale='std')
  if mode == 'group-none':
    return rljax.group_advantages(rewards, group_size, scale='none')
  if mode == 'group-batch-std':
    return rljax.group_advantages(rewards, group_size, scale='batch-std')
  if mode == 'group-batch-raw-std':
    return rljax.group_advantages(rewards, group_size, scale='batch-raw-std')
  if mode == 'rloo':
    return rljax.rloo_advantages(rewards, group_size)
  if mode == 'global':
    b = rewards.shape[0]
    gids = jnp.arange(b, dtype=jnp.int32) // group_size
    return rljax.global_baseline_advantages(rewards, gids, b // group_size)
  if mode == 'signed':
    return 2.0 * rewards.astype(jnp.float32) - 1.0
  return rewards.astype(jnp.float32)
