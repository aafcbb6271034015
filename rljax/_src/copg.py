"""Contrastive Policy Gradient (CoPG)."""

from typing import Optional

import jax
import jax.numpy as jnp

from rljax._src import aggregation as agg_lib
from rljax._src import types
from rljax._src import validation


def _check_group_size(group_size, batch: int, *, minimum: int = 1) -> None:
  if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < minimum:
    raise ValueError(f"group_size must be a Python int >= {minimum}, got {group_size!r}.")
  if batch % group_size:
    raise ValueError(f"The batch has {batch} sequences, which is not a multiple of "
                     f"group_size={group_size} (groups are contiguous runs of group_size).")


def copg_loss(logp: jax.Array,
              ref_logp: jax.Array,
              rewards: jax.Array,
              mask: jax.Array,
              group_size: int,
              *,
              beta: float = 0.1,
              normalizer: Optional[jax.Array] = None) -> types.LossOutput:
  r"""Contrastive Policy Gradient over all pairs of completions of each prompt.

  Flet-Berliac, Grinsztajn, Strub, Wu, Choi, Cremer, Ahmadian, Chandak, Azar, Pietquin and Geist,
  "Contrastive Policy Gradient: Aligning LLMs on sequence-level scores in a supervised-friendly
  fashion", arXiv 2406.19185 (EMNLP 2024). With the regularised reward
  :math:`R^\pi_\beta(y) = R(y) - \beta(\log\pi_\theta(y) - \log\pi_{ref}(y))` (sequence log-probs,
  sums over tokens), each pair of completions of one prompt, drawn from *any* policy, has loss

  .. math::
     \ell(y, y') = \frac{1}{4\beta}\big(R^\pi_\beta(y) - R^\pi_\beta(y')\big)^2,\qquad
     \nabla\ell = -\tfrac12\big(R^\pi_\beta(y) - R^\pi_\beta(y')\big)
       \big(\nabla\log\pi_\theta(y) - \nabla\log\pi_\theta(y')\big).

  Every pair term vanishes iff :math:`R(y) - \beta\log(\pi(y)/\pi_{ref}(y))` is constant, i.e. at
  the KL-regularised optimum :math:`\pi^* \propto \pi_{ref}\exp(R/\beta)`, whatever the sampling
  policy (so no importance sampling is needed); on-policy its expected gradient is the exact
  gradient of :math:`-(\mathbb{E}_\pi[R] - \beta\,\mathrm{KL}(\pi\|\pi_{ref}))` (RLOO with the KL
  in the reward). rljax computes the squared form, whose value is meaningful (0 at the optimum)
  and whose gradient equals the stop-gradient product form's; the product form differentiated
  *through* :math:`R^\pi_\beta` would converge to the wrong policy
  :math:`\propto\pi_{ref}^{1/2}e^{R/2\beta}`.

  The loss is the mean over all :math:`G(G-1)/2` unordered pairs of each group, then the mean over
  groups; in closed form, per group, :math:`\frac{1}{2\beta(G-1)}\sum_i (R^\pi_{\beta,i} -
  \overline{R^\pi_\beta})^2`. Cohere's Command A report writes :math:`\frac{1}{k-1}\sum_{i>j}
  (\Delta R^\pi_\beta)^2`, which is :math:`2\beta G` times this. CoPG is sequence-level by
  definition, so there is no ``aggregation`` argument; a row whose mask is empty counts as the empty
  completion (log-prob 0). No log-ratio clamp is applied: any clamp would move the optimum.
  None of verl, TRL, Trinity-RFT or tunix implements CoPG.

  Args:
    logp: [B, T] log π_θ of the sampled tokens (carries the gradient).
    ref_logp: [B, T] log π_ref of the same tokens (data).
    rewards: [B] sequence rewards (data).
    mask: [B, T] weights >= 0, 1 on completion tokens; a token of weight 0 is left out whatever
      its log-probs hold (inf and NaN included).
    group_size: G >= 2, completions per prompt (contiguous), a static Python int.
    beta: β > 0, the KL-regularisation strength. The paper sweeps β per task; 0.1 is the usual
      DPO/IPO-family default (Trinity-RFT's DPO uses 0.1), not a value taken from the paper.
    normalizer: external number of groups (replaces B / G) for exact gradient accumulation.

  Returns:
    `LossOutput(loss, metrics)` with ``kl_seq`` (mean of log π(y) − log π_ref(y)),
    ``regularized_reward_mean`` and ``regularized_reward_var`` (mean within-group unbiased
    variance of :math:`R^\pi_\beta`; zero at the optimum).

  Raises:
    ValueError: if `group_size` < 2 (a group of one has no pair), B is not a multiple of it, or
      shapes disagree.

  Example:
    >>> import jax.numpy as jnp, rljax
    >>> logp = jnp.log(jnp.array([[.5], [.25]]))
    >>> out = rljax.copg_loss(logp, logp, jnp.array([1., 0.]), jnp.ones((2, 1)), 2, beta=.5)
    >>> round(float(out.loss), 4)  # (1 - 0)^2 / (4 * .5)
    0.5
  """
  validation.check_token_inputs(logp, mask, ref_logp=ref_logp)
  batch = logp.shape[0]
  validation.check_sequence_array("rewards", rewards, batch)
  _check_group_size(group_size, batch, minimum=2)
  validation.check_positive("beta", beta)
  seq_logratio = agg_lib.masked_row_sums(
      logp.astype(jnp.float32), mask, jax.lax.stop_gradient(ref_logp.astype(jnp.float32)))
  r = jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32))
  reg = (r - beta * seq_logratio).reshape(-1, group_size)
  centred = reg - jnp.mean(reg, axis=1, keepdims=True)
  # mean over pairs of (a_i - a_j)^2 / (4 beta) == sum_i (a_i - mean)^2 / (2 beta (G - 1)).
  per_group = jnp.sum(jnp.square(centred), axis=1) / (2.0 * beta * (group_size - 1))
  num_groups = per_group.shape[0] if normalizer is None else normalizer
  loss = jnp.sum(per_group) / jnp.maximum(jnp.asarray(num_groups, jnp.float32), 1.0)
  metrics = {
      "kl_seq": jnp.mean(seq_logratio),
      "regularized_reward_mean": jnp.mean(reg),
      "regularized_reward_var": jnp.mean(per_group) * 2.0 * beta,
  }
  metrics = {k: jax.lax.stop_gradient(v) for k, v in metrics.items()}
  return types.LossOutput(loss, metrics)
