"""Loss + gradient time of every rljax estimator against the same computation in PyTorch eager.

    python benchmarks/estimators.py                      # [B, T] = [256, 4096], float32, CPU
    python benchmarks/estimators.py --batch 64 --length 512 --reps 5
    python benchmarks/estimators.py --train_step         # + overhead inside a model train step

For each estimator the script first checks, on the benchmark inputs, that the PyTorch version
computes the same loss and gradient as rljax (printed as max relative error), then times, on the
host CPU with the same thread count (median of `--reps` calls):

  rljax     `jax.jit(jax.value_and_grad(lambda lp: loss_fn(lp, ...).loss))`: the loss and its
            gradient only; XLA drops the unused diagnostics;
  +diag     `jax.jit(jax.value_and_grad(loss_fn, has_aux=True))`: also every diagnostic in
            `metrics` (ratio statistics, clip fractions, ESS, ...), as a train step uses it;
  torch     `loss.backward()` of the same loss in eager PyTorch (no diagnostics).

The speed-up is torch / rljax, the like-for-like comparison (the same loss and gradient on both
sides). All JAX functions are timed, then all PyTorch ones, in `--rounds` rounds (see
`_phased_medians`). Goal: every estimator at least 2x faster than eager PyTorch. The
script exits with an error if any PyTorch loss or gradient differs from rljax's by more than 1e-4
(relative), so a small run (`--batch 16 --length 32 --reps 1`, as `tests/test_benchmarks.py`
does) doubles as a check against independent PyTorch implementations.

`--train_step` measures what an estimator adds to a forward + backward step of the tiny
Transformer (batch 16 x 128): the step with each estimator (and its diagnostics) against the same
step with the plain token-mean log-likelihood, timed in alternation (baseline, estimator,
baseline, ...) so that drift in the machine's speed cancels; and, as a check with far less noise,
the estimator's own loss + gradient + diagnostics at that shape as a share of the baseline step.
Goal: under 5%.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np


def _parse():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--length", type=int, default=4096)
  p.add_argument("--group_size", type=int, default=8)
  p.add_argument("--reps", type=int, default=7)
  p.add_argument("--rounds", type=int, default=3,
                 help="timing rounds; each times every function reps // rounds times")
  p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
  p.add_argument("--only", default="", help="comma-separated estimator names")
  p.add_argument("--train_step", action="store_true")
  p.add_argument("--warmup", type=float, default=0.2,
                 help="seconds of untimed calls before timing each function")
  p.add_argument("--pause", type=float, default=1.0,
                 help="seconds to wait after each timing phase (lets PyTorch's threads idle)")
  args = p.parse_args()
  if args.reps < 1:
    p.error(f"--reps must be >= 1, got {args.reps}")
  if args.rounds < 1:
    p.error(f"--rounds must be >= 1, got {args.rounds}")
  if args.batch % args.group_size:
    p.error(f"--batch={args.batch} must be a multiple of --group_size={args.group_size}")
  return args


ARGS = _parse()

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import torch  # pylint: disable=g-import-not-at-top

import rljax  # pylint: disable=g-import-not-at-top

torch.set_num_threads(ARGS.threads)


def make_inputs(batch, length, group_size, seed=0):
  rng = np.random.default_rng(seed)
  logp = -np.abs(rng.normal(1.0, 1.0, (batch, length))).astype(np.float32)
  old = (logp + 0.2 * rng.normal(size=logp.shape)).astype(np.float32)
  behavior = (old + 0.05 * rng.normal(size=logp.shape)).astype(np.float32)
  ref = (logp + 0.3 * rng.normal(size=logp.shape)).astype(np.float32)
  lengths = rng.integers(length // 4, length + 1, batch)
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.float32)
  rewards = rng.integers(0, 2, batch).astype(np.float32)
  g = rewards.reshape(-1, group_size)
  std = g.std(axis=1, ddof=1, keepdims=True)
  adv = np.where(std > 0, (g - g.mean(1, keepdims=True)) / (std + 1e-6), 0.0).reshape(-1)
  return dict(logp=logp, old=old, behavior=behavior, ref=ref, mask=mask, rewards=rewards,
              adv=adv.astype(np.float32))


# ----------------------------------------------------------------------------------------------
# PyTorch eager versions: the same definitions as rljax's defaults, written directly.
# ----------------------------------------------------------------------------------------------


def t_token_mean(v, m):
  return (v * m).sum() / m.sum().clamp_min(1.0)


def t_seq_mean_token_mean(v, m):
  n = m.sum(-1)
  per = (v * m).sum(-1) / n.clamp_min(1.0)
  ne = (n > 0).float()
  return (per * ne).sum() / ne.sum().clamp_min(1.0)


def t_seq_mean_token_sum(v, m):
  ne = (m.sum(-1) > 0).float()
  return ((v * m).sum(-1) * ne).sum() / ne.sum().clamp_min(1.0)


def t_logratio(lp, old, m):
  return torch.clamp(torch.where(m > 0, lp - old, torch.zeros_like(lp)), -20.0, 20.0)


def t_reinforce(x, lp):
  return t_token_mean(-x["adv"][:, None] * lp, x["mask"])


def t_ppo(x, lp, eps_low=0.2, eps_high=0.2):
  m, a = x["mask"], x["adv"][:, None]
  r = torch.exp(t_logratio(lp, x["old"], m))
  loss = torch.maximum(-a * r, -a * torch.clamp(r, 1 - eps_low, 1 + eps_high))
  return t_token_mean(loss, m)


def t_gspo(x, lp, eps_low=3e-4, eps_high=4e-4):
  m, a = x["mask"], x["adv"][:, None]
  d = t_logratio(lp, x["old"], m)
  s = ((d * m).sum(-1) / m.sum(-1).clamp_min(1.0)).clamp(-20.0, 20.0)
  r = torch.exp(s.detach()[:, None] + lp - lp.detach())
  loss = torch.maximum(-a * r, -a * torch.clamp(r, 1 - eps_low, 1 + eps_high))
  return t_seq_mean_token_mean(loss, m)


def t_cispo(x, lp, eps_high=0.28):
  m, a = x["mask"], x["adv"][:, None]
  r = torch.exp(t_logratio(lp, x["old"], m)).detach()
  w = torch.clamp(r, max=1 + eps_high)
  return t_token_mean(-w * a * lp, m)


def t_tis_ppo(x, lp, cap=2.0):
  m = x["mask"]
  w = torch.clamp(torch.exp(t_logratio(x["old"], x["behavior"], m)), max=cap) * m
  a = x["adv"][:, None]
  r = torch.exp(t_logratio(lp, x["old"], m))
  loss = w * torch.maximum(-a * r, -a * torch.clamp(r, 0.8, 1.2))
  return t_token_mean(loss, m)


def t_topr(x, lp):
  m, a = x["mask"], x["rewards"][:, None]
  seq = ((t_logratio(lp, x["behavior"], m) * m).sum(-1)).clamp(-20.0, 20.0).detach()
  w = torch.where(a < 0, torch.clamp(torch.exp(seq)[:, None], 0.0, 1.0), torch.ones_like(a))
  return t_seq_mean_token_mean(-w * a * lp, m)


def t_copg(x, lp, group_size, beta=0.1):
  m = x["mask"]
  seq = (lp * m).sum(-1) - (x["ref"] * m).sum(-1)
  rr = (x["rewards"] - beta * seq).reshape(-1, group_size)
  dev = rr - rr.mean(1, keepdim=True)
  return ((dev ** 2).sum(1) / (2 * beta * (group_size - 1))).mean()


def t_opmd(x, lp, group_size, tau=1.0):
  m = x["mask"]
  g = x["rewards"].reshape(-1, group_size)
  adv = (g - g.mean(1, keepdim=True)).reshape(-1)[:, None]
  d = torch.where(m > 0, lp - x["old"], torch.zeros_like(lp))
  reg = 0.5 * tau * ((d * m).sum(-1, keepdim=True)) ** 2 / m.sum(-1, keepdim=True).clamp_min(1e-30)
  return t_seq_mean_token_sum(-adv * lp + reg, m)


def t_asymre(x, lp, group_size, shift=0.1):
  g = x["rewards"].reshape(-1, group_size)
  adv = (g - g.mean(1, keepdim=True) + shift).reshape(-1)[:, None]
  return t_token_mean(-adv * lp, x["mask"])


def t_rec(x, lp, eps=0.2):
  m, a = x["mask"], x["adv"][:, None].expand_as(lp)
  r = torch.exp(t_logratio(lp, x["old"], m)).detach()
  keep = ((a >= 0) & (r <= 1 + eps)) | ((a <= 0) & (r >= 1 - eps))
  return t_token_mean(torch.where(keep, -a * lp, torch.zeros_like(lp)), m)


def _t_cov(x, lp):
  m, a = x["mask"], x["adv"][:, None].expand_as(lp)
  lpd = lp.detach()
  c = (lpd - t_token_mean(lpd, m)) * (a - t_token_mean(a, m))
  return torch.where(m > 0, c, torch.zeros_like(c))


def t_kl_cov(x, lp, ratio=2e-3, coef=1.0):
  m, a = x["mask"], x["adv"][:, None]
  cov = _t_cov(x, lp)
  k = max(1, int(ratio * float(m.sum())))
  scores = torch.where(m > 0, cov, torch.full_like(cov, -float("inf"))).flatten()
  idx = torch.topk(scores, k).indices
  sel = torch.zeros(cov.numel(), dtype=torch.bool)
  sel[idx] = True
  sel = sel.view_as(cov)
  d = t_logratio(lp, x["old"], m)
  loss = -a * torch.exp(d) + torch.where(sel, coef * d.abs(), torch.zeros_like(d))
  return t_token_mean(loss, m)


def t_clip_cov(x, lp, selection, ratio=2e-4, lo=1.0, hi=5.0):
  m, a = x["mask"], x["adv"][:, None]
  r = torch.exp(t_logratio(lp, x["old"], m))
  unclipped, clipped = -a * r, -a * torch.clamp(r, 0.0, 2.0)
  by_ppo = clipped > unclipped
  if selection is None:  # the timed path: random choice among candidates, as the paper's code
    cov = _t_cov(x, lp)
    cand = (m > 0) & ~by_ppo & (cov > lo) & (cov < hi)
    k = max(1, int(ratio * float(m.sum())))
    prio = torch.where(cand, torch.rand_like(cov), torch.full_like(cov, -1.0)).flatten()
    idx = torch.topk(prio, k).indices
    sel = torch.zeros(cov.numel(), dtype=torch.bool)
    sel[idx[prio[idx] >= 0]] = True
    selection = sel.view_as(cov)
  loss = torch.where(selection, torch.zeros_like(r), torch.where(by_ppo, clipped, unclipped))
  return t_token_mean(loss, m)


def t_kl_penalty(x, lp):
  m = x["mask"]
  d = torch.clamp(torch.where(m > 0, lp - x["ref"], torch.zeros_like(lp)), -20.0, 20.0)
  return t_token_mean(torch.expm1(-d) + d, m)


# ----------------------------------------------------------------------------------------------
# The table: name -> (rljax loss of (logp, x), torch loss of (x, logp)).
# ----------------------------------------------------------------------------------------------


def estimators(group_size):
  G = group_size
  key = jax.random.PRNGKey(0)
  return {
      "reinforce": (lambda lp, x: rljax.reinforce_loss(lp, x["adv"], x["mask"]), t_reinforce),
      "ppo_clip (GRPO/PPO)": (
          lambda lp, x: rljax.ppo_clip_loss(lp, x["old"], x["adv"], x["mask"]), t_ppo),
      "ppo_clip dual/clip-higher": (
          lambda lp, x: rljax.ppo_clip_loss(lp, x["old"], x["adv"], x["mask"], epsilon_high=0.28,
                                            dual_clip=None),
          lambda x, lp: t_ppo(x, lp, 0.2, 0.28)),
      "gspo": (lambda lp, x: rljax.ppo_clip_loss(lp, x["old"], x["adv"], x["mask"],
                                                 level="sequence"), t_gspo),
      "cispo": (lambda lp, x: rljax.cispo_loss(lp, x["old"], x["adv"], x["mask"],
                                               epsilon_low=1.0, epsilon_high=0.28), t_cispo),
      "tis + ppo_clip": (
          lambda lp, x: rljax.ppo_clip_loss(
              lp, x["old"], x["adv"], x["mask"],
              is_weights=rljax.truncated_is_weights(x["behavior"], x["old"], x["mask"]).weights),
          t_tis_ppo),
      "topr": (lambda lp, x: rljax.topr_loss(lp, x["behavior"], 2 * x["rewards"] - 1, x["mask"]),
               lambda x, lp: t_topr(dict(x, rewards=2 * x["rewards"] - 1), lp)),
      "copg": (lambda lp, x: rljax.copg_loss(lp, x["ref"], x["rewards"], x["mask"], G),
               lambda x, lp: t_copg(x, lp, G)),
      "opmd": (lambda lp, x: rljax.opmd_loss(lp, x["old"], x["rewards"], x["mask"], G),
               lambda x, lp: t_opmd(x, lp, G)),
      "asymre": (lambda lp, x: rljax.asymre_loss(lp, x["rewards"], x["mask"], G),
                 lambda x, lp: t_asymre(x, lp, G)),
      "rec (oneside-nois)": (lambda lp, x: rljax.rec_loss(lp, x["old"], x["adv"], x["mask"]),
                             t_rec),
      "kl_cov": (lambda lp, x: rljax.kl_cov_loss(lp, x["old"], x["adv"], x["mask"]), t_kl_cov),
      "clip_cov": (lambda lp, x: rljax.clip_cov_loss(lp, x["old"], x["adv"], x["mask"], key,
                                                     selection=x.get("selection")),
                   lambda x, lp: t_clip_cov(x, lp, x.get("t_selection"))),
      "kl_penalty (k3)": (lambda lp, x: rljax.kl_penalty_loss(lp, x["ref"], x["mask"], 1.0),
                          t_kl_penalty),
  }


def _median_time(fn, reps):
  fn()  # warm-up (compilation for jax)
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


PARITY_TOL = 1e-4  # relative; the [256, 4096] run's largest error is 2.3e-5 (GSPO's loss)


def _phased_medians(runners, reps, rounds=3):
  """Median seconds per call of each runner, timed framework by framework, in rounds.

  `runners` maps (estimator, column) to a function. Each round times every JAX runner (``reps //
  rounds`` calls each, after `--warmup` seconds of untimed calls), pauses, then every PyTorch
  runner, and pauses again; each round starts at a different function, since the first one after
  a pause runs in different conditions. Keeping the frameworks in separate phases matters:
  PyTorch's OpenMP threads keep spinning for a while after each parallel region and slow a JAX
  call made right after it, as they would not in a process that runs one framework. Several
  rounds spread slow drift in the machine's speed over both frameworks.
  """
  times = {k: [] for k in runners}
  phases = [[k for k in runners if k[1] != "torch"], [k for k in runners if k[1] == "torch"]]
  for r in range(rounds):
    for phase in phases:
      shift = r * len(phase) // rounds  # rotate the order so no function is always first
      for k in phase[shift:] + phase[:shift]:
        warm_until = time.perf_counter() + ARGS.warmup
        runners[k]()
        while time.perf_counter() < warm_until:  # wake the thread pools and the CPU up
          runners[k]()
        for _ in range(max(reps // rounds, 1)):
          t0 = time.perf_counter()
          runners[k]()
          times[k].append(time.perf_counter() - t0)
      time.sleep(ARGS.pause)
  return {k: statistics.median(v) for k, v in times.items()}


def bench_losses():
  x_np = make_inputs(ARGS.batch, ARGS.length, ARGS.group_size)
  x_j = {k: jnp.asarray(v) for k, v in x_np.items()}
  x_t = {k: torch.from_numpy(v) for k, v in x_np.items()}
  only = {s.strip() for s in ARGS.only.split(",") if s.strip()}
  print(f"[B, T] = [{ARGS.batch}, {ARGS.length}] float32, {ARGS.threads} threads, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}; "
        f"median of {ARGS.reps}")
  print(f"{'estimator':28s} {'rljax ms':>9s} {'+diag ms':>9s} {'torch ms':>9s} {'speed-up':>9s} "
        f"{'loss rel err':>13s} {'grad rel err':>13s}")
  ratios, mismatches, runners, errors = {}, [], {}, {}
  for name, (jfn, tfn) in estimators(ARGS.group_size).items():
    if only and name not in only:
      continue
    xj, xt = dict(x_j), dict(x_t)
    if name == "clip_cov":  # check parity on rljax's own random selection, time both freely
      sel = rljax.clip_cov_selection(x_j["logp"], x_j["old"], x_j["adv"], x_j["mask"],
                                     jax.random.PRNGKey(0))
      xj["selection"], xt["t_selection"] = sel, torch.from_numpy(np.array(sel))
    vg = jax.jit(jax.value_and_grad(lambda lp, x, f=jfn: tuple(f(lp, x)), has_aux=True))
    vg_loss = jax.jit(jax.value_and_grad(lambda lp, x, f=jfn: f(lp, x).loss))
    (jl, _), jg = vg(x_j["logp"], xj)
    _, jg_loss_only = vg_loss(x_j["logp"], xj)  # dropping the diagnostics changes nothing
    np.testing.assert_allclose(np.asarray(jg_loss_only), np.asarray(jg), rtol=1e-6, atol=1e-9)
    lp_t = x_t["logp"].clone().requires_grad_(True)
    tl = tfn(xt, lp_t)
    tl.backward()
    loss_err = abs(float(jl) - tl.item()) / max(abs(tl.item()), 1e-12)
    g_t = lp_t.grad.numpy()
    grad_err = float(np.max(np.abs(np.asarray(jg) - g_t)) / max(np.max(np.abs(g_t)), 1e-12))
    if not (loss_err <= PARITY_TOL and grad_err <= PARITY_TOL):  # also catches NaN
      mismatches.append(f"{name} (loss rel err {loss_err:.1e}, grad rel err {grad_err:.1e})")

    runners[(name, "jax")] = lambda vg_loss=vg_loss: jax.block_until_ready(
        vg_loss(x_j["logp"], x_j))
    runners[(name, "diag")] = lambda vg=vg: jax.block_until_ready(vg(x_j["logp"], x_j))
    runners[(name, "torch")] = lambda tfn=tfn: tfn(
        x_t, x_t["logp"].clone().requires_grad_(True)).backward()
    errors[name] = (loss_err, grad_err)

  med = _phased_medians(runners, ARGS.reps, ARGS.rounds)
  for name, (loss_err, grad_err) in errors.items():
    tj, tjd, tt = med[(name, "jax")], med[(name, "diag")], med[(name, "torch")]
    ratios[name] = tt / tj
    print(f"{name:28s} {1e3 * tj:9.2f} {1e3 * tjd:9.2f} {1e3 * tt:9.2f} {tt / tj:8.2f}x "
          f"{loss_err:13.1e} {grad_err:13.1e}")
  if ratios:
    worst = min(ratios, key=ratios.get)
    print(f"vs PyTorch eager: min {ratios[worst]:.2f}x ({worst}), "
          f"median {statistics.median(ratios.values()):.2f}x; goal >= 2x for every estimator")
  if mismatches:
    sys.exit(f"PyTorch and rljax disagree beyond {PARITY_TOL:.0e}: " + "; ".join(mismatches))


def bench_train_step():
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rljax import models  # pylint: disable=g-import-not-at-top

  batch, length = 16, 128
  cfg = models.TransformerConfig.tiny()
  model = models.Transformer(cfg, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, length)), jnp.int32)
  input_mask = jnp.ones((batch, length), jnp.int32)
  mask = jnp.asarray(np.arange(length)[None, :] >= 32, jnp.float32) * jnp.ones((batch, 1))
  x = {k: jnp.asarray(v) for k, v in make_inputs(batch, length, ARGS.group_size).items()}
  x["mask"] = mask
  losses = {"token-mean log-likelihood (baseline)":
                lambda lp, x: rljax.LossOutput(-rljax.masked_mean(lp, x["mask"]), {})}
  for name, (jfn, _) in estimators(ARGS.group_size).items():
    losses[name] = jfn
  print(f"\ntrain step: tiny Transformer ({sum(v.size for v in jax.tree.leaves(state)) / 1e6:.2f}M "
        f"params), batch {batch} x {length}, forward + backward, {ARGS.reps} alternating pairs")
  print(f"{'loss':38s} {'step ms':>8s} {'added ms':>9s} {'share':>7s}   "
        f"{'alone ms':>8s} {'share':>6s}")

  def make_step(fn):
    def step_loss(st, x):
      lp = models.score_fn(graphdef, st, tokens, input_mask, x["mask"])
      out = fn(lp, x)
      return out.loss, out.metrics
    return jax.jit(jax.value_and_grad(step_loss, has_aux=True))

  def timed(f):
    t0 = time.perf_counter()
    jax.block_until_ready(f())
    return time.perf_counter() - t0

  base_name, base_fn = next(iter(losses.items()))
  base_step = make_step(base_fn)
  base_call = lambda: base_step(state, x)
  base_time = _median_time(lambda: jax.block_until_ready(base_call()), ARGS.reps)
  print(f"{base_name:38s} {1e3 * base_time:8.1f}")
  lp0 = models.score_fn(graphdef, state, tokens, input_mask, x["mask"])  # for the standalone time
  for name, fn in list(losses.items())[1:]:
    step = make_step(fn)
    call = lambda step=step: step(state, x)
    call()
    pairs = [(timed(base_call), timed(call)) for _ in range(ARGS.reps)]
    t = statistics.median(p[1] for p in pairs)
    added = statistics.median(p[1] - p[0] for p in pairs)
    alone = jax.jit(jax.value_and_grad(lambda lp, x, f=fn: tuple(f(lp, x)), has_aux=True))
    t_alone = _median_time(lambda alone=alone: jax.block_until_ready(alone(lp0, x)), ARGS.reps)
    base = statistics.median(p[0] for p in pairs)
    print(f"{name:38s} {1e3 * t:8.1f} {1e3 * added:+9.1f} {100 * added / t:+6.1f}%   "
          f"{1e3 * t_alone:8.2f} {100 * t_alone / base:5.2f}%")


if __name__ == "__main__":
  bench_losses()
  if ARGS.train_step:
    bench_train_step()
