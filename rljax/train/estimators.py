"""Estimators selectable by name in the train step, with their paper/library presets.

Each entry maps a name (``--estimator=NAME``) to

* the loss: a function of a `LossInputs` batch that calls one `rljax.*_loss`,
* the default advantage mode and aggregation (overridable by `LossConfig`),
* default hyperparameters (used where the `LossConfig` field is None).

The `rljax.*` losses are looked up when the step is traced, so this module imports with only
the primitives present; an estimator whose loss is missing fails at start-up (`check_available`)
with a message naming it.

Presets (paper / library defaults):

| name | loss | advantages | aggregation | notes |
| --- | --- | --- | --- | --- |
| reinforce | `reinforce_loss` | rloo | seq-mean-token-sum | REINFORCE with the RLOO baseline (Ahmadian et al., arXiv 2402.14740) |
| grpo | `ppo_clip_loss` | group (std) | token-mean | eps 0.2/0.2; GRPO (arXiv 2402.03300) as verl/TRL |
| ppo | `ppo_clip_loss` | group (std) | token-mean | alias of grpo's loss (no critic) |
| dr_grpo | `ppo_clip_loss` | group (no std) | seq-mean-token-sum-norm | Dr. GRPO (arXiv 2503.20783) |
| dapo | `ppo_clip_loss` | group (std) | token-mean | clip-higher eps 0.2/0.28 (DAPO, arXiv 2503.14476) |
| gspo | `ppo_clip_loss(level='sequence')` | group (std) | seq-mean-token-mean | eps 3e-4/4e-4 (GSPO, arXiv 2507.18071) |
| cispo | `cispo_loss` | group (std) | token-mean | MiniMax-M1 (arXiv 2506.13585); eps_high 0.28 (Trinity-RFT) |
| topr | `topr_loss` | raw rewards | seq-mean-token-mean | TOPR (arXiv 2503.14286) |
| copg | `copg_loss` | raw rewards | (sequence level) | CoPG (arXiv 2406.19185) |
| opmd | `opmd_loss` | raw rewards (own group baseline) | seq-mean-token-sum | Kimi k1.5 OPMD (REC paper, arXiv 2509.24203) |
| asymre | `asymre_loss` | raw rewards (own shifted baseline) | token-mean | AsymRE (arXiv 2506.20520) |
| rec | `rec_loss` | group (none) | token-mean | REC variants (arXiv 2509.24203) |
| clip_cov | `clip_cov_loss` | group (std) | token-mean | Entropy Mechanism (arXiv 2505.22617) |
| kl_cov | `kl_cov_loss` | group (std) | token-mean | Entropy Mechanism (arXiv 2505.22617) |
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp

import rljax

ADVANTAGE_MODES = ('group', 'group-none', 'group-batch-std', 'rloo', 'global', 'raw',
                   'given')
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
class EstimatorSpec:
  """A named estimator preset.

  Attributes:
    name: the flag value.
    loss_name: the `rljax` function called.
    call: `(inputs, kwargs) -> LossOutput`.
    advantage: default advantage mode (one of `ADVANTAGE_MODES`).
    aggregation: default aggregation (None for sequence-level losses without one).
    defaults: default keyword arguments of the loss; a `LossConfig` field of the same name,
      when not None, overrides them.
    needs_ref: whether the loss itself uses `ref_logp` (the reference is then always scored).
    supports_is: whether rollout-vs-trainer IS weights (TIS/MIS) apply (losses of raw rewards
      with their own construction do not take them).
    description: one line for `--help`.
  """

  name: str
  loss_name: str
  call: Callable[[LossInputs, dict[str, Any]], Any]
  advantage: str
  aggregation: str | None
  defaults: dict[str, Any]
  needs_ref: bool = False
  supports_is: bool = True
  description: str = ''


def _fn(name):
  fn = getattr(rljax, name, None)
  if fn is None:
    raise NotImplementedError(f'rljax.{name} is not available in this version of rljax')
  return fn


def _accepted(fn, kwargs):
  """Drops keyword arguments the function does not take (e.g. `aggregation` of a sequence loss)."""
  params = inspect.signature(fn).parameters
  if any(p.kind == p.VAR_KEYWORD for p in params.values()):
    return dict(kwargs)
  return {k: v for k, v in kwargs.items() if k in params}


def _with_is(fn, x: LossInputs, kw):
  """Rollout-vs-trainer IS weights: the loss's `is_weights` if it has one, else on advantages."""
  kw = _accepted(fn, kw)
  adv = x.advantages
  if x.is_weights is not None:
    if 'is_weights' in inspect.signature(fn).parameters:
      kw['is_weights'] = x.is_weights
    else:
      adv = (adv[:, None] if adv.ndim == 1 else adv) * x.is_weights
  return adv, kw


def _call_reinforce(x: LossInputs, kw):
  fn = _fn('reinforce_loss')
  adv, kw = _with_is(fn, x, kw)
  return fn(x.logp, adv, x.mask, **kw)


def _call_ppo(x: LossInputs, kw):
  fn = _fn('ppo_clip_loss')
  adv, kw = _with_is(fn, x, kw)
  return fn(x.logp, x.old_logp, adv, x.mask, **kw)


def _call_cispo(x: LossInputs, kw):
  fn = _fn('cispo_loss')
  adv, kw = _with_is(fn, x, kw)
  return fn(x.logp, x.old_logp, adv, x.mask, **kw)


def _call_topr(x: LossInputs, kw):
  fn = _fn('topr_loss')
  # TOPR's ratio is to the sampling distribution μ (the whole-sequence ratio of the paper), so it
  # corrects the rollout-vs-trainer mismatch itself.
  return fn(x.logp, x.behavior_logp, x.rewards, x.mask, **_accepted(fn, kw))


def _call_copg(x: LossInputs, kw):
  fn = _fn('copg_loss')
  # CoPG regularises towards the reference policy: π* ∝ π_ref exp(R/β).
  return fn(x.logp, x.ref_logp, x.rewards, x.mask, x.group_size, **_accepted(fn, kw))


def _call_opmd(x: LossInputs, kw):
  fn = _fn('opmd_loss')
  return fn(x.logp, x.old_logp, x.rewards, x.mask, x.group_size, **_accepted(fn, kw))


def _call_asymre(x: LossInputs, kw):
  fn = _fn('asymre_loss')
  return fn(x.logp, x.rewards, x.mask, x.group_size, **_accepted(fn, kw))


def _call_rec(x: LossInputs, kw):
  fn = _fn('rec_loss')
  adv, kw = _with_is(fn, x, kw)
  return fn(x.logp, x.old_logp, adv, x.mask, **kw)


def _call_clip_cov(x: LossInputs, kw):
  fn = _fn('clip_cov_loss')
  adv, kw = _with_is(fn, x, kw)
  return fn(x.logp, x.old_logp, adv, x.mask, x.key, **kw)


def _call_kl_cov(x: LossInputs, kw):
  fn = _fn('kl_cov_loss')
  adv, kw = _with_is(fn, x, kw)
  return fn(x.logp, x.old_logp, adv, x.mask, **kw)


def _spec(name, loss_name, call, advantage, aggregation, description, needs_ref=False,
          supports_is=True, **defaults):
  return EstimatorSpec(name=name, loss_name=loss_name, call=call, advantage=advantage,
                       aggregation=aggregation, defaults=defaults, needs_ref=needs_ref,
                       supports_is=supports_is, description=description)


ESTIMATORS: dict[str, EstimatorSpec] = {
    s.name: s for s in (
        _spec('reinforce', 'reinforce_loss', _call_reinforce, 'rloo', 'seq-mean-token-sum',
              'REINFORCE with the leave-one-out (RLOO) baseline'),
        _spec('grpo', 'ppo_clip_loss', _call_ppo, 'group', 'token-mean',
              'GRPO: PPO clip with group-normalised advantages', epsilon_low=0.2,
              epsilon_high=0.2),
        _spec('ppo', 'ppo_clip_loss', _call_ppo, 'group', 'token-mean',
              'PPO clip objective (critic-free, group advantages)', epsilon_low=0.2,
              epsilon_high=0.2),
        _spec('dr_grpo', 'ppo_clip_loss', _call_ppo, 'group-none', 'seq-mean-token-sum-norm',
              'Dr. GRPO: no std scaling, constant length normaliser', epsilon_low=0.2,
              epsilon_high=0.2),
        _spec('dapo', 'ppo_clip_loss', _call_ppo, 'group', 'token-mean',
              'DAPO clip-higher (eps_high 0.28), token-mean', epsilon_low=0.2,
              epsilon_high=0.28),
        _spec('gspo', 'ppo_clip_loss', _call_ppo, 'group', 'seq-mean-token-mean',
              'GSPO: sequence-level (length-normalised) ratio clipping', epsilon_low=3e-4,
              epsilon_high=4e-4, level='sequence'),
        # CISPO publishes no epsilon_high; 0.28 is Trinity-RFT's (cap 1.28), no lower bound.
        _spec('cispo', 'cispo_loss', _call_cispo, 'group', 'token-mean',
              'CISPO: clipped stop-gradient IS weight times REINFORCE', epsilon_high=0.28),
        _spec('topr', 'topr_loss', _call_topr, 'raw', 'seq-mean-token-mean',
              'TOPR: tapered off-policy REINFORCE on raw rewards', supports_is=False),
        _spec('copg', 'copg_loss', _call_copg, 'raw', None,
              'CoPG: contrastive policy gradient over all pairs of a group', needs_ref=True,
              supports_is=False),
        _spec('opmd', 'opmd_loss', _call_opmd, 'raw', 'seq-mean-token-sum',
              'OPMD: group REINFORCE plus squared log-ratio to the old policy',
              supports_is=False),
        _spec('asymre', 'asymre_loss', _call_asymre, 'raw', 'token-mean',
              'AsymRE: REINFORCE with a baseline shifted down', supports_is=False),
        _spec('rec', 'rec_loss', _call_rec, 'group-none', 'token-mean',
              'REC: REINFORCE with clipping masks (one-side, two-side, ring)'),
        _spec('clip_cov', 'clip_cov_loss', _call_clip_cov, 'group', 'token-mean',
              'Clip-Cov: detach gradients of high-covariance tokens'),
        _spec('kl_cov', 'kl_cov_loss', _call_kl_cov, 'group', 'token-mean',
              'KL-Cov: KL penalty on high-covariance tokens'),
    )
}


def get_estimator(name: str) -> EstimatorSpec:
  if name not in ESTIMATORS:
    raise ValueError(f'estimator must be one of {sorted(ESTIMATORS)}, got {name!r}')
  return ESTIMATORS[name]


def available_estimators() -> list[str]:
  """Estimators whose loss function exists in the installed rljax."""
  return [n for n, s in ESTIMATORS.items() if hasattr(rljax, s.loss_name)]


def check_available(name: str) -> None:
  spec = get_estimator(name)
  if not hasattr(rljax, spec.loss_name):
    raise ValueError(f'estimator {name!r} needs rljax.{spec.loss_name}, which this version of '
                     f'rljax does not provide; available: {available_estimators()}')


def compute_advantages(rewards: jax.Array, group_size: int, mode: str) -> jax.Array:
  """[B] advantages from [B] rewards in contiguous groups, by mode.

  * ``group``: (r - group mean) / (group std + 1e-6) (GRPO).
  * ``group-none``: r - group mean (Dr. GRPO).
  * ``group-batch-std``: group mean removed, batch std (REINFORCE++-baseline).
  * ``rloo``: leave-one-out mean baseline.
  * ``global``: the same as ``group-none`` for contiguous fixed groups (Reinforce-Ada's
    per-prompt mean over all samples of the prompt in the batch).
  * ``raw``: the rewards themselves (for losses with their own baseline, e.g. TOPR, CoPG).
  * ``given``: computed outside the update (e.g. Reinforce-Ada's baseline over every sample
    drawn for the prompt) and passed in `Rollout.advantages`; not handled here.
  """
  if mode not in ADVANTAGE_MODES or mode == 'given':
    raise ValueError(f'advantage must be one of {ADVANTAGE_MODES[:-1]} here, got {mode!r}')
  if mode == 'group':
    return rljax.group_advantages(rewards, group_size, scale='std')
  if mode == 'group-none':
    return rljax.group_advantages(rewards, group_size, scale='none')
  if mode == 'group-batch-std':
    return rljax.group_advantages(rewards, group_size, scale='batch-std')
  if mode == 'rloo':
    return rljax.rloo_advantages(rewards, group_size)
  if mode == 'global':
    b = rewards.shape[0]
    gids = jnp.arange(b, dtype=jnp.int32) // group_size
    return rljax.global_baseline_advantages(rewards, gids, b // group_size)
  return rewards.astype(jnp.float32)
