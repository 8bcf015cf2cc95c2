"""Deterministic refinement of a fitted support: refit on it, then a compiled local combinatorial search.

The stochastic phase (Adam on the hard-concrete relaxation) ends with a support S, the features whose
deterministic gate is open. The relaxation can stop in a local optimum: on correlated features it may
keep one of two true features and let the other absorb its effect. The refinement minimises the
exact objective on the training loss's own scale::

    F(S) = data_loss(y, best fit on S) + lambda * |S|

(the mean squared error or mean cross-entropy, with the intercept unpenalised; ``lambda`` multiplies
the number of open gates exactly as it multiplies their expected number in training) by

1. refitting the coefficients on S: least squares (linear) or Newton's method (logistic);
2. a local search over single exchanges: every move that drops one feature of S, adds one, or
   swaps one feature of S for one outside is scored, the move that lowers F most is taken, and the
   search stops when no move lowers F (by more than a rounding-level tolerance). This is the
   swap step of L0Learn's coordinate descent with local combinatorial search (Hazimeh & Mazumder
   2020) and the splicing of abess (Zhu et al. 2020), limited to exchanges of one feature and
   scored for all candidates at once.

Linear: every move is scored exactly from the centred Gram matrix ``G = X'X / n`` (computed once
and shared by every lambda of a path) with the rank-one identities of least squares. With
``A = G_SS^{-1}``, ``beta = A c_S``, ``g = X'r / n`` the residual correlations, ``Q = G[:, S]``,
``W = Q A`` and ``d_j = G_jj - Q_j A Q_j'`` (the part of x_j not explained by S):

* dropping i raises the MSE by ``beta_i^2 / A_ii``;
* adding j lowers it by ``g_j^2 / d_j``;
* swapping i for j changes it by
  ``beta_i^2 / A_ii - (g_j + W_ji beta_i / A_ii)^2 / (d_j + W_ji^2 / A_ii)``.

One step costs O(p K^2) for the p x K candidate table (``W = Q A``) and O(K^2) for the rank-one
update of A after the move (no factorisation inside the loop), with K the largest support the
search may reach (a static bound from n and p, so the program never depends on lambda).

Logistic: the same formulas on the quadratic model of the cross-entropy (Fisher weight at the current
fit times the Gram matrix) rank the moves; all drops and the best-ranked adds and swaps are refitted
exactly by Newton's method in one vmapped batch, and the best of them is taken when its exact F is
lower.

The search runs from two starts, the stochastic phase's support and the empty support (vmapped), and
keeps the lower F: the empty start is forward selection with swaps, which does not depend on the
gate noise at all.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l0jax._src.regression.objective import ModelKind

Array = jax.Array

# The largest support the search may reach; the candidate table is p x K.
MAX_SUPPORT = 128
# A candidate feature must keep this fraction of its variance after projecting out the support:
# below it, x_j is (numerically) in the span of S and its score would be rounding noise.
_MIN_RESIDUAL = 1e-4
# Logistic: the best-ranked drops, adds and swaps refitted exactly per step (each of the three).
_LOGISTIC_CANDIDATES = 4
_NEWTON_STEPS = 8
_NEWTON_START_STEPS = 30
# Logistic refits add (LOGISTIC_RIDGE / 2) * ||coef||^2 to the mean cross-entropy: on a support that
# separates the classes the cross-entropy has no finite minimiser (it falls to 0 as the coefficients
# grow), and the search would then prefer separating supports with unbounded coefficients.
LOGISTIC_RIDGE = 1e-3


class Moments(NamedTuple):
    """Centred second moments of the data (intercept fitted) or raw ones (no intercept)."""

    gram: Array  # (p, p) X'X / n
    xty: Array  # (p,) X'y / n
    yty: Array  # () y'y / n
    x_mean: Array  # (p,)
    y_mean: Array  # ()


class Refined(NamedTuple):
    """A refined fit: coefficients on the full feature axis, the intercept, the support and F."""

    coef: Array  # (p,)
    intercept: Array  # ()
    support: Array  # (p,) bool
    objective: Array  # () data loss + lambda * |S|
    data_loss: Array  # ()
    moves: Array  # () int32, moves taken by the winning start


def max_support(n_samples: int, n_features: int, fit_intercept: bool) -> int:
    """The static bound K on the support size: at most p, n minus the intercept, and ``MAX_SUPPORT``."""
    return int(max(1, min(n_features, n_samples - int(fit_intercept), MAX_SUPPORT)))


def _columns(design: Any, idx: Array) -> Array:
    """Columns ``X[:, idx]`` as an (n, len(idx)) array, through the operator's ``matvec``."""
    p = design.shape[1]
    eye = jax.nn.one_hot(idx, p, dtype=design.dtype)
    return jax.vmap(design.matvec)(eye).T


def moments(design: Any, y: Array, fit_intercept: bool) -> Moments:
    """The Gram matrix and cross-products the linear search reads (O(n p^2) once).

    Args:
      design: X behind the ``matvec`` seam, (n, p).
      y: targets, (n,).
      fit_intercept: centre X and y (the intercept is then fitted implicitly).

    Returns:
      ``Moments``.
    """
    n, p = design.shape
    dtype = y.dtype
    data = getattr(design, "data", None)
    if design.backend == "dense" and data is not None:
        gram = data.T @ data
    else:
        # Column blocks of X'X through matvec/rmatvec: memory n x block, whatever the backend.
        gram = jax.lax.map(
            lambda e: design.rmatvec(design.matvec(e)), jnp.eye(p, dtype=dtype), batch_size=min(p, 128)
        )
    gram = gram.astype(dtype) / n
    if fit_intercept:
        # y is centred before the products (its mean can dwarf its spread: y = 30 + ... loses three
        # digits of float32 in mean(y^2) - mean(y)^2); X is centred through the Gram identity.
        x_mean = design.rmatvec(jnp.ones(n, dtype)) / n
        y_mean = jnp.mean(y)
        yc = y - y_mean
        gram = gram - jnp.outer(x_mean, x_mean)
        xty = design.rmatvec(yc) / n
        yty = jnp.mean(yc * yc)
    else:
        xty = design.rmatvec(y) / n
        yty = jnp.mean(y * y)
        x_mean = jnp.zeros(p, dtype)
        y_mean = jnp.zeros((), dtype)
    # Symmetrise: the blocked product may differ in the last bits between G_ij and G_ji.
    gram = 0.5 * (gram + gram.T)
    return Moments(gram, xty, yty, x_mean, y_mean)


def _start(score: Array, k: int) -> tuple[Array, Array]:
    """The K slots of a start: the K highest scores, valid where the score is finite."""
    top, idx = jax.lax.top_k(score, k)
    return idx.astype(jnp.int32), jnp.isfinite(top)


def _in_support(idx: Array, valid: Array, p: int) -> Array:
    return jnp.zeros(p, bool).at[idx].max(valid)


class _Solve(NamedTuple):
    beta: Array  # (K,) zero on empty slots
    inv: Array  # (K, K) G_SS^{-1}, identity on empty slots
    mse: Array  # ()


def _solve(mom: Moments, idx: Array, valid: Array) -> _Solve:
    k = idx.shape[0]
    both = valid[:, None] & valid[None, :]
    gss = jnp.where(both, mom.gram[idx[:, None], idx[None, :]], 0.0)
    diag = jnp.diagonal(gss)
    # A rounding-level ridge keeps the Cholesky factor finite on (numerically) collinear supports.
    jitter = 10 * jnp.finfo(gss.dtype).eps * jnp.maximum(diag, 1e-30)
    gss = gss + jnp.diag(jnp.where(valid, jitter, 1.0))
    chol = jax.scipy.linalg.cho_factor(gss, lower=True)
    inv = jax.scipy.linalg.cho_solve(chol, jnp.eye(k, dtype=gss.dtype))
    c = jnp.where(valid, mom.xty[idx], 0.0)
    beta = jnp.where(valid, inv @ c, 0.0)
    mse = jnp.maximum(mom.yty - c @ beta, 0.0)
    return _Solve(beta, inv, mse)


def _linear_moves(mom: Moments, idx: Array, valid: Array, sol: _Solve, lam: Array):
    """Change of F for every drop (K,), add (p,) and swap (p, K) from support (idx, valid)."""
    p = mom.gram.shape[0]
    member = _in_support(idx, valid, p)
    q = jnp.where(valid[None, :], mom.gram[:, idx], 0.0)  # (p, K)
    w = q @ sol.inv  # (p, K)
    g = mom.xty - q @ sol.beta  # residual correlations X'r / n
    gdiag = jnp.diagonal(mom.gram)
    d = gdiag - jnp.sum(w * q, axis=1)
    a = jnp.diagonal(sol.inv)
    loss_drop = sol.beta**2 / a  # (K,)
    usable = ~member & (d > _MIN_RESIDUAL * gdiag)
    gain_add = jnp.where(usable, g**2 / jnp.where(usable, d, 1.0), 0.0)
    has_room = ~jnp.all(valid)
    inf = jnp.asarray(jnp.inf, d.dtype)
    drop = jnp.where(valid, loss_drop - lam, inf)
    add = jnp.where(usable & has_room, lam - gain_add, inf)
    d_swap = d[:, None] + w**2 / a[None, :]
    num = g[:, None] + w * (sol.beta / a)[None, :]
    ok = (~member)[:, None] & valid[None, :] & (d_swap > _MIN_RESIDUAL * gdiag[:, None])
    swap = jnp.where(ok, loss_drop[None, :] - num**2 / jnp.where(ok, d_swap, 1.0), inf)
    return drop, add, swap


def _apply_move(idx: Array, valid: Array, drop: Array, add: Array, swap: Array):
    """Takes the lowest-change move; returns the new (idx, valid) and that change."""
    k = idx.shape[0]
    p = add.shape[0]
    best = jnp.stack([jnp.min(drop), jnp.min(add), jnp.min(swap)])
    kind = jnp.argmin(best)
    i_drop = jnp.argmin(drop).astype(jnp.int32)
    j_add = jnp.argmin(add).astype(jnp.int32)
    flat = jnp.argmin(swap).astype(jnp.int32)
    j_swap, i_swap = flat // k, flat % k
    free = jnp.argmin(valid).astype(jnp.int32)  # first empty slot
    slot = jnp.where(kind == 0, i_drop, jnp.where(kind == 1, free, i_swap))
    feature = jnp.where(kind == 1, j_add, jnp.where(kind == 2, j_swap, idx[slot])).astype(idx.dtype)
    new_idx = idx.at[slot].set(jnp.clip(feature, 0, p - 1))
    new_valid = valid.at[slot].set(kind != 0)
    return new_idx, new_valid, best[kind], kind, slot


def _updated_inverse(mom: Moments, sol: _Solve, idx: Array, valid: Array, kind: Array, slot: Array, new_idx):
    """``G_SS^{-1}`` after the move, by rank-one updates (O(K^2)) instead of a new factorisation.

    A drop (kind 0) or the drop half of a swap (kind 2) removes ``slot`` with the Schur identity
    ``A - A[:, i] A[i, :] / A_ii``; an add (kind 1) or the add half of a swap puts feature j in
    ``slot`` with ``u = A b``, ``d = G_jj - b'u`` (b = G[S, j]): ``A + u u'/d`` bordered by ``-u/d``
    and ``1/d``. Empty slots keep identity rows, as in ``_solve``.
    """
    inv = sol.inv
    k = inv.shape[0]
    e = jax.nn.one_hot(slot, k, dtype=inv.dtype)
    keep = (1 - e)[:, None] * (1 - e)[None, :]
    a = inv[:, slot]
    dropped = (inv - jnp.outer(a, a) / inv[slot, slot]) * keep + jnp.outer(e, e)
    inv = jnp.where(kind == 1, inv, dropped)
    mid = valid.at[slot].set(False)
    j = new_idx[slot]
    b = jnp.where(mid, mom.gram[idx, j], 0.0)
    u = inv @ b
    d = jnp.maximum(mom.gram[j, j] - b @ u, jnp.finfo(inv.dtype).tiny)
    col = (e - u) / d
    added = (inv + jnp.outer(u, u) / d) * keep + jnp.outer(e, col) + jnp.outer(col, e) - jnp.outer(e, e) / d
    return jnp.where(kind == 0, inv, added)


def _linear_search(mom: Moments, idx: Array, valid: Array, lam: Array, tol: Array, max_steps: int):
    def objective(sol, valid):
        return sol.mse + lam * jnp.sum(valid, dtype=lam.dtype)

    def cond(state):
        _, _, _, step, moved = state
        return moved & (step < max_steps)

    def body(state):
        idx, valid, sol, step, _ = state
        drop, add, swap = _linear_moves(mom, idx, valid, sol, lam)
        new_idx, new_valid, change, kind, slot = _apply_move(idx, valid, drop, add, swap)
        inv = _updated_inverse(mom, sol, idx, valid, kind, slot, new_idx)
        c = jnp.where(new_valid, mom.xty[new_idx], 0.0)
        beta = jnp.where(new_valid, inv @ c, 0.0)
        new_sol = _Solve(beta, inv, jnp.maximum(mom.yty - c @ beta, 0.0))
        # Accept only on a strict fall of the recomputed objective, so rounding cannot cycle.
        moved = (change < -tol) & (objective(new_sol, new_valid) < objective(sol, valid) - tol)
        keep = lambda a, b: jax.tree.map(lambda u, v: jnp.where(moved, u, v), a, b)  # noqa: E731
        return (
            keep(new_idx, idx),
            keep(new_valid, valid),
            keep(new_sol, sol),
            step + moved.astype(jnp.int32),
            moved,
        )

    sol = _solve(mom, idx, valid)
    idx, valid, sol, steps, _ = jax.lax.while_loop(
        cond, body, (idx, valid, sol, jnp.zeros((), jnp.int32), jnp.asarray(True))
    )
    # The final coefficients from a fresh factorisation (no drift from the rank-one updates).
    sol = _solve(mom, idx, valid)
    return idx, valid, sol, objective(sol, valid), steps


def _tolerance(scale: Array) -> Array:
    return 100 * jnp.finfo(scale.dtype).eps * jnp.maximum(scale, jnp.finfo(scale.dtype).tiny)


def _scatter(idx: Array, valid: Array, values: Array, p: int) -> Array:
    return jnp.zeros(p, values.dtype).at[idx].add(jnp.where(valid, values, 0.0))


def _refine_linear_one(mom: Moments, score: Array, lam: Array, k: int) -> Refined:
    """Both starts (stochastic support, empty), vmapped; the lower F wins (ties: the first start)."""
    p = mom.gram.shape[0]
    idx0, valid0 = _start(score, k)
    empty_idx = jnp.arange(k, dtype=jnp.int32) % p
    idx = jnp.stack([idx0, empty_idx])
    valid = jnp.stack([valid0, jnp.zeros(k, bool)])
    tol = _tolerance(mom.yty)
    max_steps = 4 * k + 4 * 16
    idx, valid, sol, obj, steps = jax.vmap(lambda i, v: _linear_search(mom, i, v, lam, tol, max_steps))(
        idx, valid
    )
    win = jnp.where(obj[1] < obj[0] - tol, 1, 0).astype(jnp.int32)
    coef = _scatter(idx[win], valid[win], sol.beta[win], p)
    intercept = mom.y_mean - mom.x_mean @ coef
    support = _in_support(idx[win], valid[win], p)
    return Refined(coef, intercept, support, obj[win], sol.mse[win], steps[win])


def _start_score(coef: Array, gates: Array, threshold: float) -> Array:
    """Score of each feature for the stochastic start: |coef| where the gate is open, -inf elsewhere."""
    return jnp.where(gates > threshold, jnp.abs(coef) + 1.0, -jnp.inf)


def _refine_linear(design, y, coef, gates, lam, *, fit_intercept, k, threshold):
    mom = moments(design, y, fit_intercept)
    return _refine_linear_one(mom, _start_score(coef, gates, threshold), lam, k)


def _refine_linear_path(design, y, coef, gates, lam, *, fit_intercept, k, threshold):
    mom = moments(design, y, fit_intercept)
    return jax.vmap(lambda c, g, lm: _refine_linear_one(mom, _start_score(c, g, threshold), lm, k))(
        coef, gates, lam
    )


# -- logistic ---------------------------------------------------------------------------------


def _cross_entropy(y: Array, eta: Array) -> Array:
    return jnp.mean(jax.nn.softplus(eta) - y * eta)


def _penalised(y: Array, eta: Array, coef: Array) -> Array:
    return _cross_entropy(y, eta) + 0.5 * LOGISTIC_RIDGE * jnp.sum(coef * coef)


def _newton(z: Array, valid: Array, theta: Array, y: Array, fit_intercept: bool, steps: int):
    """Newton's method with a step-length safeguard on the columns ``z`` (n, K) plus an intercept.

    ``theta`` is (K + 1,): the coefficients then the intercept. Empty slots (and the intercept
    without ``fit_intercept``) stay at zero. Each step tries the full Newton step and three
    halvings and keeps the best point (never a worse one), so the loss never rises.
    """
    n = z.shape[0]
    ones = jnp.ones((n, 1), z.dtype) * jnp.asarray(fit_intercept, z.dtype)
    z1 = jnp.concatenate([jnp.where(valid[None, :], z, 0.0), ones], axis=1)
    mask = jnp.concatenate([valid, jnp.asarray([fit_intercept])])
    both = mask[:, None] & mask[None, :]
    lengths = jnp.asarray([1.0, 0.5, 0.25, 0.0], z.dtype)
    theta = jnp.where(mask, theta, 0.0)
    ridge = jnp.where(jnp.arange(mask.shape[0]) < mask.shape[0] - 1, LOGISTIC_RIDGE, 0.0).astype(z.dtype)
    ridge = jnp.where(mask, ridge, 0.0)

    def loss(t):
        return _penalised(y, z1 @ t, t[:-1])

    def step(theta, _):
        eta = z1 @ theta
        prob = jax.nn.sigmoid(eta)
        grad = jnp.where(mask, z1.T @ (prob - y) / n + ridge * theta, 0.0)
        weight = prob * (1 - prob)
        hess = jnp.where(both, (z1 * weight[:, None]).T @ z1 / n, 0.0) + jnp.diag(ridge)
        jitter = 10 * jnp.finfo(z.dtype).eps * (1.0 + jnp.diagonal(hess))
        hess = hess + jnp.diag(jnp.where(mask, jitter, 1.0))
        delta = jnp.where(mask, jnp.linalg.solve(hess, grad), 0.0)
        trial = theta[None, :] - lengths[:, None] * delta[None, :]
        losses = jax.vmap(loss)(trial)
        losses = jnp.where(jnp.isfinite(losses), losses, jnp.inf)
        return trial[jnp.argmin(losses)], None

    theta, _ = jax.lax.scan(step, theta, None, length=steps)
    return theta, loss(theta)


class _LogisticState(NamedTuple):
    idx: Array
    valid: Array
    theta: Array  # (K + 1,)
    loss: Array
    step: Array
    moved: Array


def _logistic_search(design, y, mom, state, lam, tol, fit_intercept, max_steps):
    k = state.idx.shape[0]
    p = mom.gram.shape[0]
    m = min(_LOGISTIC_CANDIDATES, p)

    def objective(loss, valid):
        return loss + lam * jnp.sum(valid, axis=-1, dtype=lam.dtype)

    def body(s: _LogisticState) -> _LogisticState:
        z = _columns(design, s.idx)
        eta = jnp.where(s.valid[None, :], z, 0.0) @ s.theta[:k] + s.theta[k]
        prob = jax.nn.sigmoid(eta)
        fisher = jnp.maximum(jnp.mean(prob * (1 - prob)), 1e-6)
        # The quadratic model: Hessian ~ fisher * G, gradient X'(y - prob) / n.
        sol = _solve(mom, s.idx, s.valid)
        beta = jnp.where(s.valid, s.theta[:k], 0.0)
        sol = sol._replace(beta=beta)
        grad = design.rmatvec(y - prob) / y.shape[0]
        if fit_intercept:
            grad = grad - mom.x_mean * jnp.mean(y - prob)
        scaled = Moments(
            mom.gram,
            grad / fisher + mom.gram[:, s.idx] @ jnp.where(s.valid, beta, 0.0),
            mom.yty,
            mom.x_mean,
            mom.y_mean,
        )
        drop, add, swap = _linear_moves(scaled, s.idx, s.valid, sol, jnp.zeros((), y.dtype))
        # Candidates: the m best drops, adds and swaps, ranked by the quadratic model.
        md = min(m, k)
        _, drops = jax.lax.top_k(-drop, md)
        _, adds = jax.lax.top_k(-add, m)
        _, swaps = jax.lax.top_k(-swap.ravel(), m)
        drops, adds, swaps = (a.astype(jnp.int32) for a in (drops, adds, swaps))
        free = jnp.argmin(s.valid).astype(jnp.int32)
        slots = jnp.concatenate([drops, jnp.full((m,), free, jnp.int32), swaps % k])
        feats = jnp.concatenate([s.idx[drops], adds, swaps // k])
        is_drop = jnp.arange(md + 2 * m) < md
        allowed = jnp.concatenate(
            [s.valid[drops], jnp.isfinite(add[adds]), jnp.isfinite(swap.ravel()[swaps])]
        )
        cols = _columns(design, feats)  # (n, k + 2m)

        def candidate(slot, feat, col, drop):
            c_idx = s.idx.at[slot].set(feat)
            c_valid = s.valid.at[slot].set(~drop)
            c_z = z.at[:, slot].set(col)
            theta0 = s.theta.at[slot].set(0.0)
            theta, loss = _newton(c_z, c_valid, theta0, y, fit_intercept, _NEWTON_STEPS)
            return c_idx, c_valid, theta, loss

        c_idx, c_valid, c_theta, c_loss = jax.vmap(candidate, in_axes=(0, 0, 1, 0))(
            slots, feats, cols, is_drop
        )
        c_obj = jnp.where(allowed, objective(c_loss, c_valid), jnp.inf)
        best = jnp.argmin(c_obj)
        moved = c_obj[best] < objective(s.loss, s.valid) - tol
        pick = lambda new, old: jnp.where(moved, new, old)  # noqa: E731
        return _LogisticState(
            pick(c_idx[best], s.idx),
            pick(c_valid[best], s.valid),
            pick(c_theta[best], s.theta),
            pick(c_loss[best], s.loss),
            s.step + moved.astype(jnp.int32),
            moved,
        )

    def cond(s):
        return s.moved & (s.step < max_steps)

    return jax.lax.while_loop(cond, body, state)


def _refine_logistic_one(design, y, mom, score, lam, *, fit_intercept, k):
    p = mom.gram.shape[0]
    idx0, valid0 = _start(score, k)
    empty_idx = jnp.arange(k, dtype=jnp.int32) % p
    mean = jnp.clip(jnp.mean(y), 1e-3, 1 - 1e-3)
    bias0 = jnp.where(fit_intercept, jnp.log(mean) - jnp.log1p(-mean), 0.0)
    theta0 = jnp.zeros(k + 1, y.dtype).at[k].set(bias0)
    tol = _tolerance(jnp.asarray(jnp.log(2.0), y.dtype))
    max_steps = 4 * k + 4 * 16

    def run(idx, valid):
        z = _columns(design, idx)
        theta, loss = _newton(z, valid, theta0, y, fit_intercept, _NEWTON_START_STEPS)
        state = _LogisticState(idx, valid, theta, loss, jnp.zeros((), jnp.int32), jnp.asarray(True))
        return _logistic_search(design, y, mom, state, lam, tol, fit_intercept, max_steps)

    out = jax.vmap(run)(jnp.stack([idx0, empty_idx]), jnp.stack([valid0, jnp.zeros(k, bool)]))
    obj = out.loss + lam * jnp.sum(out.valid, axis=1, dtype=lam.dtype)
    win = jnp.where(obj[1] < obj[0] - tol, 1, 0).astype(jnp.int32)
    coef = _scatter(out.idx[win], out.valid[win], out.theta[win, :k], p)
    support = _in_support(out.idx[win], out.valid[win], p)
    return Refined(coef, out.theta[win, k], support, obj[win], out.loss[win], out.step[win])


def _refine_logistic(design, y, coef, gates, lam, *, fit_intercept, k, threshold):
    mom = moments(design, y, fit_intercept)
    score = _start_score(coef, gates, threshold)
    return _refine_logistic_one(design, y, mom, score, lam, fit_intercept=fit_intercept, k=k)


def _refine_logistic_path(design, y, coef, gates, lam, *, fit_intercept, k, threshold):
    mom = moments(design, y, fit_intercept)
    return jax.vmap(
        lambda c, g, lm: _refine_logistic_one(
            design, y, mom, _start_score(c, g, threshold), lm, fit_intercept=fit_intercept, k=k
        )
    )(coef, gates, lam)


_STATIC = ("fit_intercept", "k", "threshold")
_PROGRAMS = {
    ("linear", False): jax.jit(_refine_linear, static_argnames=_STATIC),
    ("linear", True): jax.jit(_refine_linear_path, static_argnames=_STATIC),
    ("logistic", False): jax.jit(_refine_logistic, static_argnames=_STATIC),
    ("logistic", True): jax.jit(_refine_logistic_path, static_argnames=_STATIC),
}


def refine(
    design: Any,
    y: Array,
    coef: Array,
    gates: Array,
    lambda_l0: Array,
    *,
    kind: ModelKind,
    fit_intercept: bool,
    threshold: float,
    path: bool = False,
) -> Refined:
    """Refines the support of one fit (or of every fit on a path) in one compiled program.

    Args:
      design: X behind the ``matvec`` seam, (n, p).
      y: targets, (n,), in the design's dtype (0/1 for logistic).
      coef: (p,) gated coefficients of the stochastic phase, or (k, p) on a path.
      gates: (p,) deterministic gates, or (k, p) on a path.
      lambda_l0: () the L0 strength, or (k,) on a path; an array argument (no recompilation).
      kind: "linear" or "logistic".
      fit_intercept: fit an unpenalised intercept.
      threshold: a gate above it puts its feature in the starting support.
      path: the inputs carry a leading lambda axis.

    Returns:
      ``Refined`` (with the leading lambda axis on a path).
    """
    n, p = design.shape
    k = max_support(n, p, fit_intercept)
    dtype = design.dtype
    program = _PROGRAMS[(kind, bool(path))]
    return program(
        design,
        jnp.asarray(y, dtype),
        jnp.asarray(coef, dtype),
        jnp.asarray(gates, dtype),
        jnp.asarray(lambda_l0, dtype),
        fit_intercept=bool(fit_intercept),
        k=k,
        threshold=float(threshold),
    )


def gate_locations(support: Any, temperature: float, gamma: float, zeta: float) -> np.ndarray:
    """``log_alpha`` values whose deterministic gates are exactly 1 on ``support`` and 0 elsewhere.

    Under both test-time rules (``median``: ``sigmoid(log_alpha / temperature)``; ``paper``:
    ``sigmoid(log_alpha)``), stretched to (gamma, zeta) and clipped: a margin of 4 beyond the
    clipping points on the logit scale.

    Args:
      support: (..., p) booleans.
      temperature: the gate temperature.
      gamma: lower end of the stretch interval.
      zeta: upper end of the stretch interval.

    Returns:
      ``log_alpha`` of the support's shape, float64.
    """
    width = zeta - gamma
    open_at = np.log((1 - gamma) / width) - np.log1p(-(1 - gamma) / width)
    closed_at = np.log(-gamma / width) - np.log1p(gamma / width)
    level = max(1.0, temperature) * (max(abs(open_at), abs(closed_at)) + 4.0)
    return np.where(np.asarray(support), level, -level)
