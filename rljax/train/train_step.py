"""Jitted, sharded updates: the RL step (several optimizer steps on one batch) and the SFT step.

One RL update on a batch of `B = num_prompts * group_size` completions, as one jitted function of
global arrays (so under a mesh every sum and metric is over the whole batch):

1. Score the batch with the current parameters (no gradient): `old_logp` (the proximal anchor,
   unless `old_logp='sampler'`), per-token entropy, and the trainer-vs-sampler log-prob gap.
   Score it with the frozen reference parameters when a KL term, the estimator or
   `track_ref_kl` needs them (`LossConfig.uses_ref`), and not otherwise.
   When the batch is used once (one epoch, one mini-batch, trainer anchor) the policy *is* the
   old policy, so there is no separate scoring pass: the anchor, the entropy, the sampler gap
   and the IS weights are `stop_gradient` of the differentiated pass itself (its aux outputs).
2. Advantages from the rewards (`LossConfig.advantage`, or the estimator's preset), optionally
   multiplied by truncated / masked importance weights of trainer over sampler (TIS / MIS).
3. `num_epochs` passes over the batch in `num_minibatches` mini-batches of whole groups (shuffled
   per epoch); each mini-batch is one optimizer step on
   `estimator_loss + kl_coef * KL(π_θ‖π_ref) - entropy_coef * H(π_θ)`.
4. Metrics from the global arrays (means over the mini-batch steps for loss diagnostics).

Every pass projects to the vocabulary only the last `max_new_tokens` columns (the completion;
see `rljax.models.score`'s `completion_width`) when `max_new_tokens` is given. When moreover
the G rows of every group share their prompt columns (tokens and input mask), as the sampler's
completions of one prompt do, every pass runs each prompt through the layers once per group
(`rljax.models.score`'s `group_size`; the same losses and gradients to float32 rounding). The
update checks both on the batch before it runs (one small device-to-host read per call).

The estimator is chosen by name (`rljax.train.estimators.ESTIMATORS`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import rljax
from rljax._src import aggregation as aggregation_lib
from rljax._src import ratios as ratios_lib
from rljax.models import score_fn
from rljax.train import estimators as est_lib
from rljax.train import mesh as mesh_lib
from rljax.train.batch import TrainBatch

SCHEDULES = ('constant', 'cosine', 'linear')
OPTIMIZERS = ('adamw', 'adam', 'sgd')
# The importance-ratio diagnostics of the update, named as the metrics it reports.
_RATIO_METRICS = {'ratio_mean': 'ratio/mean', 'ratio_max': 'ratio/max', 'ratio_min': 'ratio/min',
                  'approx_kl': 'ratio/approx_kl_old', 'log_ratio_clamped_frac': 'ratio/clamped_frac'}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
  """Parameters, optimizer state and the number of optimizer updates applied.

  Attributes:
    params: `nnx.State` of the model's `nnx.Param`s.
    opt_state: optax state.
    step: int32 scalar, optimizer updates so far (drives the learning-rate schedule).
  """

  params: Any
  opt_state: Any
  step: jax.Array

  def replace(self, **changes) -> 'TrainState':
    return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optax optimizer with gradient clipping and a warmup + decay schedule.

  Attributes:
    optimizer: 'adamw', 'adam' or 'sgd'.
    learning_rate: peak learning rate.
    schedule: 'constant', 'cosine' (to `end_lr_factor * lr`) or 'linear', after warmup.
    warmup_steps: linear warmup from 0 over this many updates.
    decay_steps: updates over which the decay runs (after warmup); ignored for 'constant'.
    end_lr_factor: final learning rate as a fraction of the peak.
    weight_decay: decoupled weight decay (adamw only).
    b1, b2, eps: Adam moments.
    max_grad_norm: clip the global gradient norm to this (None or 0: no clipping).
  """

  optimizer: str = 'adamw'
  learning_rate: float = 1e-4
  schedule: str = 'constant'
  warmup_steps: int = 0
  decay_steps: int = 0
  end_lr_factor: float = 0.0
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  max_grad_norm: float | None = 1.0

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f'optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}')
    if self.schedule not in SCHEDULES:
      raise ValueError(f'schedule must be one of {SCHEDULES}, got {self.schedule!r}')
    if not self.learning_rate > 0:
      raise ValueError(f'learning_rate must be > 0, got {self.learning_rate}')
    if self.warmup_steps < 0 or self.decay_steps < 0:
      raise ValueError('warmup_steps and decay_steps must be >= 0')


def make_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then constant / cosine / linear decay."""
  peak = cfg.learning_rate
  end = peak * cfg.end_lr_factor
  if cfg.schedule == 'constant' or cfg.decay_steps == 0:
    decay = optax.constant_schedule(peak)
  elif cfg.schedule == 'cosine':
    decay = optax.cosine_decay_schedule(peak, cfg.decay_steps, alpha=cfg.end_lr_factor)
  else:
    decay = optax.linear_schedule(peak, end, cfg.decay_steps)
  if cfg.warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, peak, cfg.warmup_steps)
  return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """`clip_by_global_norm` then the optimizer with the schedule of `cfg`."""
  schedule = make_schedule(cfg)
  if cfg.optimizer == 'adamw':
    opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
  elif cfg.optimizer == 'adam':
    opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  else:
    opt = optax.sgd(schedule)
  if cfg.max_grad_norm:
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), opt)
  return opt


def init_train_state(params: Any, tx: optax.GradientTransformation,
                     mesh: jax.sharding.Mesh | None = None,
                     rules: mesh_lib.PartitionRules = mesh_lib.DEFAULT_RULES) -> TrainState:
  """Fresh optimizer state for `params`.

  With a `mesh`, every leaf of the returned state is placed explicitly: the optimizer moments
  follow the parameters' partition rules (their paths end with the parameter names) and scalars
  are replicated, so the jitted step sees the same input shardings on every call (no
  recompilation after the first step).
  """
  opt_state = jax.jit(tx.init)(params)
  state = TrainState(params=params, opt_state=opt_state, step=jnp.zeros((), jnp.int32))
  if mesh is not None:
    state = jax.device_put(state, mesh_lib.param_shardings(state, mesh, rules))
  return state


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """What the RL update optimises.

  Attributes:
    estimator: name in `rljax.train.estimators.ESTIMATORS`.
    advantage: advantage mode (`estimators.ADVANTAGE_MODES`), None for the estimator's preset.
    aggregation: aggregation mode (`rljax.AGGREGATION_MODES`), None for the preset.
    max_tokens: constant of 'seq-mean-token-sum-norm' (None: the completion width N).
    temperature: sampling temperature; the trainer scores with the same temperature so its
      log-probs are those of the sampled distribution.
    kl_coef: weight of the KL-to-reference penalty (0: no penalty, and the reference is only
      scored for the `kl_ref` metric when `track_ref_kl`).
    clamp: bound on the absolute log-ratio before `exp`, for the losses that take one and for
      the `ratio/*` diagnostics.
    kl_estimator: 'k1', 'k2', 'k3', 'abs' or 'mse' (see `rljax.kl_divergence`).
    entropy_coef: weight of the entropy bonus.
    is_correction: 'none', 'tis' (truncate) or 'mis' (mask) rollout-vs-trainer importance
      weights `π_trainer / μ_sampler` applied to the advantages.
    is_cap: the truncation / masking threshold.
    is_level: 'token' or 'sequence'.
    old_logp: 'trainer' (recompute the proximal anchor with the trainer before the first
      update) or 'sampler' (use the sampler's behaviour log-probs).
    loss_kwargs: estimator hyperparameters as (keyword, value) pairs, overriding the preset's;
      every keyword must be one the estimator's loss takes.
    track_ref_kl: score the reference even without a KL term, to report `kl_ref` (one more
      forward pass per update).
  """

  estimator: str = 'grpo'
  advantage: str | None = None
  aggregation: str | None = None
  max_tokens: int | None = None
  temperature: float = 1.0
  kl_coef: float = 0.0
  clamp: float = 20.0
  kl_estimator: str = 'k3'
  entropy_coef: float = 0.0
  is_correction: str = 'none'
  is_cap: float = 2.0
  is_level: str = 'token'
  old_logp: str = 'trainer'
  loss_kwargs: tuple[tuple[str, Any], ...] = ()
  track_ref_kl: bool = False

  def __post_init__(self):
    spec = est_lib.get_estimator(self.estimator)
    for keyword, _ in self.loss_kwargs:
      if keyword not in spec.keywords:
        raise ValueError(f'loss_kwargs: {spec.loss.__name__} (estimator {self.estimator!r}) '
                         f'takes no keyword {keyword!r}; it takes {sorted(spec.keywords)}')
    if self.advantage is not None and self.advantage not in est_lib.ADVANTAGE_MODES:
      raise ValueError(f'advantage must be one of {est_lib.ADVANTAGE_MODES}, '
                       f'got {self.advantage!r}')
    if self.aggregation is not None and self.aggregation not in rljax.AGGREGATION_MODES:
      raise ValueError(f'aggregation must be one of {rljax.AGGREGATION_MODES}, '
                       f'got {self.aggregation!r}')
    if self.kl_estimator not in rljax.KL_ESTIMATORS:
      raise ValueError(f'kl_estimator must be one of {rljax.KL_ESTIMATORS}, '
                       f'got {self.kl_estimator!r}')
    if self.is_correction not in est_lib.IS_CORRECTIONS:
      raise ValueError(f'is_correction must be one of {est_lib.IS_CORRECTIONS}, '
                       f'got {self.is_correction!r}')
    if self.old_logp not in est_lib.OLD_LOGP_SOURCES:
      raise ValueError(f'old_logp must be one of {est_lib.OLD_LOGP_SOURCES}, '
                       f'got {self.old_logp!r}')
    if not self.temperature > 0:
      raise ValueError(f'temperature must be > 0, got {self.temperature}')
    if self.kl_coef < 0 or self.entropy_coef < 0:
      raise ValueError('kl_coef and entropy_coef must be >= 0')
    if not self.clamp > 0:
      raise ValueError(f'clamp must be > 0, got {self.clamp}')

  @property
  def spec(self) -> est_lib.EstimatorSpec:
    return est_lib.get_estimator(self.estimator)

  @property
  def advantage_mode(self) -> str:
    return self.advantage or self.spec.advantage

  @property
  def aggregation_mode(self) -> str:
    return self.aggregation or self.spec.aggregation or 'token-mean'

  @property
  def uses_ref(self) -> bool:
    return self.kl_coef > 0 or self.spec.needs_ref or self.track_ref_kl

  def estimator_kwargs(self, completion_width: int) -> dict[str, Any]:
    """The loss's keyword arguments: the preset, then `loss_kwargs`, then the shared ones."""
    spec = self.spec
    kw = dict(spec.presets)
    kw.update(dict(self.loss_kwargs))
    shared = {'aggregation': self.aggregation_mode,
              'max_tokens': self.max_tokens or completion_width, 'clamp': self.clamp}
    kw.update({k: v for k, v in shared.items() if k in spec.keywords})
    return kw


def make_rl_update(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, cfg: LossConfig,
                   *, group_size: int, num_epochs: int = 1, num_minibatches: int = 1,
                   max_new_tokens: int | None = None, shuffle: bool = True,
                   donate: bool = True, combine: Callable[[Any, Any], Any] | None = None,
                   share_prompts: bool = True) -> Callable[..., Any]:
  """Builds `update(state, ref_params, batch, key, frozen=None) -> (state, metrics)`, jitted.

  Args:
    graphdef: the model's graph definition (`nnx.split(model)[0]`; the state it is merged
      with is the parameters, `nnx.split(model)[1]`).
    tx: optax transformation (see `make_optimizer`).
    cfg: the loss configuration.
    group_size: completions per prompt G (groups are contiguous; mini-batches hold whole groups).
    num_epochs: passes over the batch.
    num_minibatches: optimizer steps per pass; the number of prompts must be divisible by it.
    max_new_tokens: completion width N: the default `max_tokens` of 'seq-mean-token-sum-norm'
      (default: the full sequence length L), and the number of last columns scored (the
      completion of a left-padded prompt; a batch with completion-mask entries before them is
      refused with a ValueError when the batch is concrete).
    shuffle: permute the groups before splitting each epoch into mini-batches.
    donate: donate the input state's buffers.
    combine: `combine(params, frozen) -> model state`, for a policy whose trainable part
      (`state.params`, `ref_params`: e.g. LoRA adapters, `rljax.models.lora.merge`) is
      combined with a frozen part passed as `frozen` (not donated, no gradient).
    share_prompts: with `max_new_tokens`, run each group's prompt once when the batch's groups
      share their prompt columns (see the module docstring); False always runs every row.

  Returns:
    A function that checks the batch's layout (see `max_new_tokens`, `share_prompts`) and
    calls the jitted update (its `.lower` takes the same arguments). `batch` is a `TrainBatch` whose leading dimension may be sharded over the
    mesh's batch axes (call it under `jax.set_mesh(mesh)` so mini-batches keep that sharding);
    `ref_params` may be None when `cfg.uses_ref` is False. `metrics` is a dict of scalars.
  """
  if cfg.is_correction != 'none' and not cfg.spec.supports_is:
    raise ValueError(f'is_correction={cfg.is_correction!r} does not apply to estimator '
                     f'{cfg.estimator!r}, which builds its own weights from raw rewards')
  if num_epochs < 1 or num_minibatches < 1:
    raise ValueError(f'num_epochs and num_minibatches must be >= 1, got {num_epochs}, '
                     f'{num_minibatches}')
  # One pass over one mini-batch: the old policy is the current one (see the module docstring).
  single_pass = num_epochs == 1 and num_minibatches == 1 and cfg.old_logp == 'trainer'
  loss_fn = _make_loss_fn(graphdef, cfg, group_size, max_new_tokens, single_pass)

  def update(state: TrainState, ref_params: Any, batch: TrainBatch, key: jax.Array,
             frozen: Any = None, shared_prompt: bool = False):
    full = (lambda p: p) if combine is None else (lambda p: combine(p, frozen))
    prompt_group = group_size if shared_prompt else None
    b = batch.sample.tokens.shape[0]
    if b % group_size:
      raise ValueError(f'batch size {b} is not a multiple of group_size={group_size}')
    num_groups = b // group_size
    if num_groups % num_minibatches:
      raise ValueError(f'{num_groups} prompts per batch do not split into '
                       f'num_minibatches={num_minibatches}')
    data, scored = _score_batch(graphdef, cfg, full(state.params),
                                None if ref_params is None else full(ref_params), batch,
                                group_size, max_new_tokens, score_trainer=not single_pass,
                                prompt_group=prompt_group)
    loss_kwargs = cfg.estimator_kwargs(max_new_tokens or batch.sample.tokens.shape[1])
    key_perm, key_loss = jax.random.split(key)
    rows = _minibatch_rows(key_perm, num_groups, group_size, num_epochs, num_minibatches,
                           shuffle)
    loss_keys = jax.random.split(key_loss, num_epochs * num_minibatches)

    def body(carry, xs):
      params, opt_state, step = carry
      mb, k = xs
      (_, (metrics, in_pass)), grads = jax.value_and_grad(
          lambda p, *a, **kw: loss_fn(full(p), *a, **kw), has_aux=True)(
              params, mb, k, loss_kwargs=loss_kwargs, prompt_group=prompt_group)
      metrics['grad_norm'] = optax.global_norm(grads)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return (params, opt_state, step + 1), (metrics, in_pass)

    carry = (state.params, state.opt_state, state.step)
    if single_pass:
      whole = {name: mesh_lib.constrain_batch(x) for name, x in data.items()}
      (params, opt_state, step), (metrics, in_pass) = body(carry, (whole, loss_keys[0]))
      scored.update(in_pass)
    else:
      def scan_body(carry, xs):
        ids, k = xs
        mb = {name: mesh_lib.constrain_batch(jnp.take(x, ids, axis=0))
              for name, x in data.items()}
        carry, (metrics, _) = body(carry, (mb, k))
        return carry, metrics

      (params, opt_state, step), mb_metrics = jax.lax.scan(scan_body, carry, (rows, loss_keys))
      metrics = {k: (jnp.max(v) if k.endswith('max') else
                     jnp.min(v) if k.endswith('min') else jnp.mean(v))
                 for k, v in mb_metrics.items()}
    metrics.update(_batch_metrics(cfg, batch, data, scored, group_size))
    metrics['learning_rate_step'] = step.astype(jnp.float32)
    return TrainState(params=params, opt_state=opt_state, step=step), metrics

  jitted = jax.jit(update, donate_argnums=(0,) if donate else (),
                   static_argnames=('shared_prompt',))
  return _with_layout_check(jitted, max_new_tokens, group_size if share_prompts else None)


def _with_layout_check(jitted, width: int | None, group_size: int | None):
  """`update(state, ref_params, batch, key, frozen=None)` calling `jitted` with the batch's
  `shared_prompt` flag (see `_check_layout`); its `.lower` takes the same arguments."""

  def checked_update(state, ref_params, batch, key, frozen=None):
    shared = _check_layout(batch, width, group_size)
    return jitted(state, ref_params, batch, key, frozen, shared_prompt=shared)

  def lower(state, ref_params, batch, *args):
    return jitted.lower(state, ref_params, batch, *args,
                        shared_prompt=_check_layout(batch, width, group_size))

  checked_update.lower = lower
  return checked_update


@functools.partial(jax.jit, static_argnums=(3, 4))
def _layout_flags(tokens, input_mask, completion_mask, start: int, group_size: int):
  """[completion tokens before column `start`, every group's rows share columns :start]."""
  before = jnp.any(completion_mask[:, :start] != 0)
  if not group_size:
    return jnp.stack([before, jnp.array(False)])

  def same(x):
    prompts = x[:, :start].reshape(-1, group_size, start)
    return jnp.all(prompts == prompts[:, :1])

  return jnp.stack([before, same(tokens) & same(input_mask.astype(jnp.int32))])


def _check_layout(batch: TrainBatch, width: int | None, group_size: int | None) -> bool:
  """Refuses completion tokens outside the last `width` columns (never scored); returns
  whether the groups of `group_size` rows share their prompt (the first L - width columns)."""
  sample = batch.sample
  mask = sample.completion_mask
  start = mask.shape[1] - width if width else 0
  if start <= 0 or isinstance(mask, jax.core.Tracer):
    return False
  if group_size and mask.shape[0] % group_size:
    group_size = None  # The update itself refuses this batch, naming group_size.
  before, shared = jax.device_get(_layout_flags(sample.tokens, sample.input_mask, mask, start,
                                                group_size or 0))
  if before:
    raise ValueError(f'max_new_tokens={width}: the batch has completion tokens before its last '
                     f'{width} columns (width {mask.shape[1]}); pass its completion width')
  return bool(shared)


def _make_loss_fn(graphdef: nnx.GraphDef, cfg: LossConfig, group_size: int,
                  completion_width: int | None, single_pass: bool):
  """`loss_fn(params, minibatch, key, loss_kwargs, prompt_group) -> (loss, (metrics, in_pass))`.

  `prompt_group`: None, or the group size G when the minibatch's groups share their prompts.

  With `single_pass`, the minibatch is the whole batch without an `old_logp` (nor IS weights):
  the anchor is `stop_gradient` of this pass's log-probs, and `in_pass` holds what the separate
  scoring pass would have given (`trainer_logp`, `entropy`, `is_metrics`); else it is empty.
  """
  spec = cfg.spec
  need_entropy_grad = cfg.entropy_coef > 0
  return_entropy = need_entropy_grad or single_pass

  def loss_fn(params, mb, key, loss_kwargs, prompt_group=None):
    out = score_fn(graphdef, params, mb['tokens'], mb['input_mask'], mb['mask'],
                   temperature=cfg.temperature, return_entropy=return_entropy,
                   completion_width=completion_width, group_size=prompt_group)
    logp, entropy = out if return_entropy else (out, None)
    in_pass = {}
    if single_pass:
      anchor = jax.lax.stop_gradient(logp)
      mb = dict(mb, old_logp=anchor)
      is_metrics = {}
      if cfg.is_correction != 'none':
        mb['is_weights'], is_metrics = _is_weights(cfg, mb['behavior_logp'], anchor, mb['mask'])
      in_pass = dict(trainer_logp=anchor, entropy=jax.lax.stop_gradient(entropy),
                     is_metrics=is_metrics)
    inputs = est_lib.LossInputs(
        logp=logp, old_logp=mb['old_logp'], behavior_logp=mb['behavior_logp'],
        ref_logp=mb['ref_logp'], advantages=mb['advantages'], rewards=mb['rewards'],
        mask=mb['mask'], key=key, group_size=group_size, is_weights=mb.get('is_weights'))
    main = spec(inputs, loss_kwargs)
    total = main.loss
    metrics = {f'loss/{k}': v for k, v in main.metrics.items()}
    metrics['loss/policy'] = main.loss
    if cfg.kl_coef > 0:
      kl = rljax.kl_penalty_loss(logp, mb['ref_logp'], mb['mask'], cfg.kl_coef,
                                 estimator=cfg.kl_estimator, aggregation=cfg.aggregation_mode,
                                 max_tokens=loss_kwargs.get('max_tokens'))
      total = total + kl.loss
      metrics['loss/kl_penalty'] = kl.loss
    if need_entropy_grad:
      ent = rljax.entropy_bonus(entropy, mb['mask'], cfg.entropy_coef,
                                aggregation=cfg.aggregation_mode,
                                max_tokens=loss_kwargs.get('max_tokens'))
      total = total + ent.loss
      metrics['loss/entropy_bonus'] = ent.loss
    # Importance-ratio diagnostics of the current policy against the proximal anchor.
    d = rljax.log_ratio(jax.lax.stop_gradient(logp), mb['old_logp'], mb['mask'], clamp=cfg.clamp)
    ratios = ratios_lib.ratio_metrics(d, mb['mask'], clamp=cfg.clamp)
    metrics.update({_RATIO_METRICS[k]: v for k, v in ratios.items()})
    metrics['loss/total'] = total
    return total, (metrics, in_pass)

  return loss_fn


def _is_weights(cfg: LossConfig, behavior_logp, trainer_logp, mask):
  """Truncated / masked importance weights trainer over sampler, and their metrics."""
  is_w = rljax.truncated_is_weights(
      behavior_logp, trainer_logp, mask, cap=cfg.is_cap, level=cfg.is_level,
      mode='truncate' if cfg.is_correction == 'tis' else 'mask')
  return is_w.weights, is_w.metrics


def _score_batch(graphdef, cfg: LossConfig, params, ref_params, batch: TrainBatch,
                 group_size: int, completion_width: int | None, *, score_trainer: bool = True,
                 prompt_group: int | None = None
                 ) -> tuple[dict[str, jax.Array], dict[str, Any]]:
  """The update's per-row data (the policy scored once before any step) and diagnostics.

  Args:
    score_trainer: run the no-gradient pass of the current policy; without it (the batch is
      used once) `data` has no `old_logp` nor IS weights and `scored` no trainer log-probs,
      entropy nor IS metrics: the loss pass supplies them.
    prompt_group: None, or G when the batch's groups share their prompts (one prompt pass).

  Returns:
    `(data, scored)`: `data` holds what every mini-batch slices (tokens, masks, anchors,
    advantages, rewards, IS weights); `scored` the trainer log-probs, entropy, reference
    log-probs and the IS metrics, for the batch statistics.
  """
  sample = batch.sample
  mask = sample.completion_mask.astype(jnp.float32)
  input_mask = sample.input_mask.astype(jnp.int32)
  score = functools.partial(score_fn, graphdef, tokens=sample.tokens, input_mask=input_mask,
                            mask=mask, temperature=cfg.temperature,
                            completion_width=completion_width, group_size=prompt_group)
  scored = {}
  if score_trainer:
    trainer_logp, entropy = jax.lax.stop_gradient(score(params, return_entropy=True))
    scored.update(trainer_logp=trainer_logp, entropy=entropy)
  if cfg.uses_ref:
    ref_logp = jax.lax.stop_gradient(score(ref_params))
  else:
    ref_logp = jnp.zeros_like(mask)
  scored['ref_logp'] = ref_logp
  if cfg.advantage_mode == 'given':
    adv = batch.advantages.astype(jnp.float32)
  else:
    adv = est_lib.compute_advantages(batch.rewards, group_size, cfg.advantage_mode)
  data = {
      'tokens': sample.tokens, 'input_mask': input_mask, 'mask': mask,
      'behavior_logp': sample.behavior_logp, 'ref_logp': ref_logp, 'advantages': adv,
      'rewards': batch.rewards,
  }
  if not score_trainer:
    return data, scored
  data['old_logp'] = trainer_logp if cfg.old_logp == 'trainer' else sample.behavior_logp
  scored['is_metrics'] = {}
  if cfg.is_correction != 'none':
    data['is_weights'], scored['is_metrics'] = _is_weights(cfg, sample.behavior_logp,
                                                           trainer_logp, mask)
  return data, scored


def _minibatch_rows(key, num_groups: int, group_size: int, num_epochs: int,
                    num_minibatches: int, shuffle: bool) -> jax.Array:
  """Row indices `[num_epochs * num_minibatches, rows per mini-batch]`, whole groups each."""
  if shuffle and num_minibatches > 1:
    perms = jax.vmap(lambda k: jax.random.permutation(k, num_groups))(
        jax.random.split(key, num_epochs))
  else:
    perms = jnp.broadcast_to(jnp.arange(num_groups), (num_epochs, num_groups))
  rows = perms[:, :, None] * group_size + jnp.arange(group_size)
  return rows.reshape(num_epochs * num_minibatches, -1)


def _batch_metrics(cfg: LossConfig, batch: TrainBatch, data, scored,
                   group_size: int) -> dict[str, jax.Array]:
  """Statistics of the whole batch (rewards, lengths, entropy, sampler gap, reference KL)."""
  sample, mask, adv = batch.sample, data['mask'], data['advantages']
  rewards = batch.rewards.astype(jnp.float32)
  grouped = rewards.reshape(-1, group_size)
  lengths = jnp.sum(mask, axis=1)
  gap = jnp.abs(scored['trainer_logp'] - sample.untruncated_logp)
  metrics = {
      'reward_mean': jnp.mean(rewards),
      'reward_std': jnp.std(rewards),
      'response_length': jnp.mean(lengths),
      'response_length_max': jnp.max(lengths),
      'truncation_rate': 1.0 - jnp.mean(sample.stopped.astype(jnp.float32)),
      'entropy': rljax.masked_mean(scored['entropy'], mask),
      'advantage_abs_mean': jnp.mean(jnp.abs(adv)),
      'mixed_groups_frac': jnp.mean((jnp.max(grouped, 1) > jnp.min(grouped, 1))
                                    .astype(jnp.float32)),
      'logp_diff/trainer_sampler_mean': rljax.masked_mean(gap, mask),
      'logp_diff/trainer_sampler_max': aggregation_lib.masked_max(gap, mask),
      'num_tokens': jnp.sum(mask),
  }
  metrics.update({f'is/{k}': v for k, v in scored['is_metrics'].items()})
  if cfg.uses_ref:
    k3 = rljax.kl_divergence(scored['trainer_logp'], scored['ref_logp'], mask, estimator='k3')
    metrics['kl_ref'] = rljax.masked_mean(k3, mask)
  return metrics


def make_sft_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                  donate: bool = True, combine: Callable[[Any, Any], Any] | None = None
                  ) -> Callable[..., Any]:
  """Builds `step(state, tokens, input_mask, target_mask, frozen=None) -> (state, metrics)`.

  Supervised warm start: minimises the token-mean negative log-likelihood of the target tokens
  (the demonstrations), `-Σ m_t log p(y_t | y_<t) / Σ m_t`, over the global batch. `combine`
  as in `make_rl_update`: the model is `combine(state.params, frozen)`. Jitted.
  """

  def loss_fn(params, tokens, input_mask, target_mask, frozen):
    if combine is not None:
      params = combine(params, frozen)
    logp = score_fn(graphdef, params, tokens, input_mask, target_mask)
    m = target_mask.astype(jnp.float32)
    nll = -jnp.sum(logp * m) / jnp.maximum(jnp.sum(m), 1.0)
    return nll, {'sft/nll': nll,
                 'sft/token_accuracy_proxy': rljax.masked_mean(jnp.exp(logp), m)}

  def step(state: TrainState, tokens, input_mask, target_mask, frozen=None):
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, tokens, input_mask, target_mask, frozen)
    metrics['sft/grad_norm'] = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params=params, opt_state=opt_state, step=state.step + 1), metrics

  return jax.jit(step, donate_argnums=(0,) if donate else ())
