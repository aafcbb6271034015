"""The table of rljax losses that the cross-cutting tests run over (robustness, sharding,
gradient accumulation), and a uniform way to call each one.

Losses are discovered by name: every callable that `rljax` exports ending in ``_loss``. Each is
called by binding its required positional parameters by name (``logp``, ``old_logp``,
``behavior_logp``, ``ref_logp``, ``advantages``, ``rewards``, ``mask``, ``group_size``,
``key``, ``entropy``), which the API fixes (shared/API.md). `REQUIRED` supplies keyword-only
hyperparameters that have no default; `VARIANTS` lists the options each test also covers.
"""

import functools
import inspect
from typing import Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

import rljax

# Every loss in shared/API.md's "Losses" table (truncated_is_weights returns weights, not a
# loss, and is tested on its own).
API_LOSSES = (
    "reinforce_loss", "ppo_clip_loss", "cispo_loss", "topr_loss", "copg_loss", "opmd_loss",
    "asymre_loss", "rec_loss", "clip_cov_loss", "kl_cov_loss", "entropy_bonus", "kl_penalty_loss")
API_OTHERS = (
    "LossOutput", "aggregate", "sequence_logp", "log_ratio", "importance_ratio",
    "token_logp_from_logits", "entropy_from_logits", "kl_divergence", "effective_sample_size",
    "group_advantages", "rloo_advantages", "global_baseline_advantages", "discounted_returns",
    "gae_advantages", "truncated_is_weights")

# Keyword-only hyperparameters without a default (CISPO's ε_high must be chosen explicitly).
REQUIRED: Dict[str, dict] = {"cispo_loss": {"epsilon_high": 0.28}}

# Options covered besides the defaults (only where the loss exists and takes them).
VARIANTS: Dict[str, List[dict]] = {
    "ppo_clip_loss": [{"level": "sequence"}, {"dual_clip": 3.0, "epsilon_high": 0.28}],
    "cispo_loss": [{"epsilon_low": 0.2, "mask_clipped": True}],
    "topr_loss": [{"level": "token"}],
    "opmd_loss": [{"level": "token"}, {"baseline": "logavgexp"}],
    "rec_loss": [{"variant": v} for v in getattr(rljax, "REC_VARIANTS", ())],
    "kl_penalty_loss": [{"estimator": e} for e in ("k1", "k2", "abs")],
    "entropy_bonus": [{"coef": 0.01}],
}

DATA_ARGS = ("logp", "old_logp", "behavior_logp", "ref_logp", "advantages", "rewards", "mask",
             "key", "entropy")
TOKEN_ARGS = ("logp", "old_logp", "behavior_logp", "ref_logp", "mask", "entropy")


def exported_losses() -> List[str]:
  """Every exported loss: names ending in ``_loss``, plus the entropy bonus."""
  names = [n for n in dir(rljax) if n.endswith("_loss") or n == "entropy_bonus"]
  return sorted(n for n in names if callable(getattr(rljax, n)))


class Case(NamedTuple):
  name: str
  options: tuple   # sorted (keyword, value) pairs, so that a Case is hashable
  group_size: Optional[int]

  @property
  def kwargs(self) -> dict:
    return dict(self.options)

  @property
  def id(self) -> str:
    opts = ",".join(f"{k}={v}" for k, v in self.options)
    gs = "" if self.group_size is None else f"G={self.group_size}"
    return "-".join(x for x in (self.name, opts, gs) if x)


def _params(name):
  return inspect.signature(getattr(rljax, name)).parameters


def takes(name: str, arg: str) -> bool:
  return arg in _params(name)


def cases(group_sizes=(2,), variants=True) -> List[Case]:
  """Every exported loss with its defaults (and, if `variants`, each variant)."""
  out = []
  for name in exported_losses():
    params = _params(name)
    kw_sets = [{}] + (VARIANTS.get(name, []) if variants else [])
    for i, kw in enumerate(kw_sets):
      if i and all(k in params and params[k].default == v for k, v in kw.items()):
        continue   # the defaults, already covered
      opts = tuple(sorted(kw.items()))
      if "group_size" in params:
        for g in (group_sizes if i == 0 else group_sizes[-1:]):
          out.append(Case(name, opts, g))
      else:
        out.append(Case(name, opts, None))
  return out


def bind(case: Case) -> Callable:
  """Returns `f(diff, data, **extra) -> LossOutput`; `diff` is the differentiable first argument
  (``logp``, or ``entropy`` for the entropy bonus), `data` a dict of the other arrays and
  `extra` further keyword arguments (e.g. ``normalizer``)."""
  fn = getattr(rljax, case.name)
  params = _params(case.name)
  positional = [p for p in params.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
  for p in positional:
    if p.name not in DATA_ARGS and p.name != "group_size":
      raise TypeError(f"{case.name}: required argument {p.name!r} is not in the loss table")
  diff_name = positional[0].name
  kwargs = dict(REQUIRED.get(case.name, {}), **case.kwargs)

  def f(diff, data, **extra):
    args = []
    for p in positional:
      if p.name == diff_name:
        args.append(diff)
      elif p.name == "group_size":
        args.append(case.group_size)
      else:
        args.append(data[p.name])
    return fn(*args, **kwargs, **extra)

  f.diff_name = diff_name
  return f


@functools.lru_cache(maxsize=None)
def value_and_grad(case: Case) -> Callable:
  """One jitted `(diff, data) -> ((loss, metrics), grad)` per case, reused across inputs."""
  f = bind(case)

  def loss(diff, data):
    out = f(diff, data)
    return out.loss, out.metrics

  return jax.jit(jax.value_and_grad(loss, has_aux=True))


def make_data(seed: int, batch: int, length: int, group_size: int = 2) -> dict:
  """A well-conditioned random batch (ragged mask, one empty row, small log-ratios)."""
  rng = np.random.default_rng(seed)
  logp = np.log(rng.uniform(0.05, 0.95, size=(batch, length))).astype(np.float32)
  lengths = rng.integers(1, length + 1, size=batch)
  lengths[1] = 0
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.float32)
  rewards = rng.integers(0, 2, size=batch).astype(np.float32) + 0.1 * rng.normal(size=batch)
  rewards[: group_size] = 1.0   # one zero-variance group
  data = {
      "logp": logp,
      "old_logp": (logp + 0.3 * rng.normal(size=logp.shape)).astype(np.float32),
      "behavior_logp": (logp + 0.3 * rng.normal(size=logp.shape)).astype(np.float32),
      "ref_logp": (logp + 0.5 * rng.normal(size=logp.shape)).astype(np.float32),
      "advantages": rng.normal(size=batch).astype(np.float32),
      "rewards": rewards.astype(np.float32),
      "mask": mask,
      "entropy": rng.uniform(0.0, 2.0, size=(batch, length)).astype(np.float32),
      "key": np.array([0, seed], np.uint32),   # == jax.random.PRNGKey(seed), without a JAX op
  }
  return data


def diff_and_data(case: Case, data: dict):
  """Splits a data dict into the differentiable array and the rest, for `bind(case)`."""
  name = bind(case).diff_name
  return jnp.asarray(data[name]), {k: jnp.asarray(v) for k, v in data.items() if k != name}
