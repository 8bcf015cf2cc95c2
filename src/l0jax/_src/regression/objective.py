"""The L0-regularised regression objective as pure functions of a parameter dict.

Parameters: ``weight`` (n_features,) theta tilde, ``log_alpha`` (n_features,) one gate per feature,
and ``bias`` () when an intercept is fitted. The coefficients are ``weight * z`` with z the
hard-concrete gates, and the objective is (Louizos et al. 2018, eq. 3 with the expected L0 of eq. 12)::

    data_loss(y, X @ (weight * z) + bias) + lambda * sum_j P(z_j != 0)

with the squared error (``kind="linear"``) or the binary cross-entropy on logits
(``kind="logistic"``) as the data loss, both averaged over samples as in l0-python.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from l0jax._src import hard_concrete as hc
from l0jax._src.aliases import EvalRule

Array = jax.Array
Params = dict[str, Array]

ModelKind = Literal["linear", "logistic"]
"""The regression model: least squares or logistic."""


class GateHyper(NamedTuple):
    """Hyperparameters of the gates and the fit, all arrays so that changing them never recompiles."""

    lambda_l0: Array  # L0 strength, >= 0
    lr: Array  # Adam learning rate, > 0
    temperature: Array
    gamma: Array
    zeta: Array


def init_params(
    rng: np.random.Generator, n_features: int, bias: float | None, init_keep_prob: float, dtype: DTypeLike
) -> dict[str, np.ndarray]:
    """l0-python's initialisation: weight ~ N(0, 0.1^2), log_alpha = logit(keep) + N(0, 0.01^2).

    Drawn on the host: a jitted draw would cost a compilation (seconds on a small CPU) per shape,
    more than a whole fit of a small problem.

    Args:
      rng: NumPy generator seeded from the model's key.
      n_features: number of features p.
      bias: the intercept's starting value, or None for no intercept.
      init_keep_prob: initial probability of keeping each feature, in (0, 1).
      dtype: floating dtype of the parameters.

    Returns:
      The parameter dict (NumPy arrays).
    """
    weight = 0.1 * rng.standard_normal(n_features)
    mu = hc.logit_np(init_keep_prob)
    log_alpha = mu + 0.01 * rng.standard_normal(n_features)
    params = {"weight": weight.astype(dtype), "log_alpha": log_alpha.astype(dtype)}
    if bias is not None:
        params["bias"] = np.asarray(bias, dtype)
    return params


def initial_bias(y: np.ndarray, kind: ModelKind) -> float:
    """The intercept to start from: mean(y) (linear) or the log-odds of the positive rate (logistic)."""
    mean = float(np.mean(y))
    if kind == "linear":
        return mean
    return float(hc.logit_np(min(max(mean, 1e-3), 1 - 1e-3)))


def sample_gates(key: Array, params: Params, hyper: GateHyper) -> Array:
    """Training-time gates z ~ HardConcrete(log_alpha, temperature) (eqs. 9-10)."""
    return hc.hard_concrete(key, params["log_alpha"], hyper.temperature, gamma=hyper.gamma, zeta=hyper.zeta)


def eval_gates(params: Params, hyper: GateHyper, rule: EvalRule) -> Array:
    """Test-time gates (``rule="median"`` or eq. 13's ``"paper"``)."""
    return hc.hard_concrete_eval(
        params["log_alpha"], hyper.temperature, gamma=hyper.gamma, zeta=hyper.zeta, rule=rule
    )


def linear_predictor(params: Params, design: Any, gates: Array) -> Array:
    """``X @ (weight * gates) + bias``: predictions (linear) or logits (logistic), shape (n_samples,)."""
    out = design.matvec(params["weight"] * gates)
    if "bias" in params:
        out = out + params["bias"]
    return out


def data_loss(y: Array, eta: Array, kind: ModelKind) -> Array:
    """Mean squared error (``"linear"``) or mean binary cross-entropy on logits ``eta`` (``"logistic"``).

    Args:
      y: targets, (n_samples,); 0/1 labels for logistic.
      eta: linear predictor, (n_samples,).
      kind: ``"linear"`` or ``"logistic"``.

    Returns:
      A scalar.
    """
    if kind == "linear":
        return jnp.mean(jnp.square(y - eta))
    # log(1 + e^eta) - y * eta is -log p(y | eta), written with softplus so it is finite for any eta.
    return jnp.mean(jax.nn.softplus(eta) - y * eta)


def expected_l0(params: Params, hyper: GateHyper) -> Array:
    """Expected number of open gates, eq. 12."""
    return hc.l0_penalty(params["log_alpha"], hyper.temperature, gamma=hyper.gamma, zeta=hyper.zeta)


def objective(
    params: Params, design: Any, y: Array, hyper: GateHyper, key: Array, kind: ModelKind
) -> tuple[Array, tuple[Array, Array]]:
    """One Monte-Carlo draw of the L0 objective; returns (total, (data_loss, expected_l0)).

    Args:
      params: the parameter dict.
      design: X behind the ``matvec`` seam.
      y: targets, (n_samples,).
      hyper: gate and fit hyperparameters.
      key: PRNG key of this step's gate noise.
      kind: ``"linear"`` or ``"logistic"``.

    Returns:
      ``(data_loss + lambda * expected_l0, (data_loss, expected_l0))``.
    """
    z = sample_gates(key, params, hyper)
    loss = data_loss(y, linear_predictor(params, design, z), kind)
    penalty = expected_l0(params, hyper)
    return loss + hyper.lambda_l0 * penalty, (loss, penalty)
