"""Sparse L0 regression against l0-python's SparseL0Linear and scikit-learn's Lasso path.

Run: ``.venv/bin/python benchmarks/regression.py [--quick]`` (the l0-python
reference comes from ``$L0_PYTHON`` or ``make bench-env``).

``--subset`` runs the best-subset comparison instead (see ``subset_main``): l0jax's ``l0_path``
against abess 0.4.11 and scikit-learn's ``LassoCV`` (both in the reference environment, which
``make bench-env`` builds with them) on the synthetic designs of Hazimeh & Mazumder (2020).

Three tables, all measured in this run on the same data:

1. Time per epoch and support recovery (precision, recall of the true features) of one fit, for
   l0jax and l0-python, on l0-python's recovery problem (1,000 x 100, 95% zeros, 5 true features)
   and on a larger one (20,000 x 2,000, 5% dense, 20 true features), same lambda, lr and epochs.
2. A 20-lambda path: l0jax's one compiled vmapped run against sequential l0-python fits (by
   default 4 of the 20 lambdas are run and their time is scaled by 5, labelled as such;
   ``--full-reference`` runs all 20).
3. Support recovery and coefficient error at equal numbers of active features: each l0jax path point
   against the point of scikit-learn's Lasso path (coordinate descent, 1,000 alphas) with the same
   number of features.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from _common import machine, run_reference
from scipy import sparse as sp

import l0jax
from l0jax._src.operators import as_operator

REFERENCE = r"""
import json, sys, time
import numpy as np, scipy.sparse as sp, torch
from l0.sparse import SparseL0Linear
torch.set_num_threads(2)
p = json.load(sys.stdin)
d = np.load(p["file"])
X = sp.csr_matrix((d["data"], d["indices"], d["indptr"]), shape=tuple(d["shape"]))
y = d["y"]
fits = []
for lam in p["lambdas"]:
    # l0-python draws its weights from torch's global RNG: seed it for a repeatable reference.
    torch.manual_seed(0)
    model = SparseL0Linear(n_features=X.shape[1], seed=0)
    start = time.perf_counter()
    model.fit(X, y, lambda_reg=lam, lr=p["lr"], epochs=p["epochs"])
    seconds = time.perf_counter() - start
    fits.append({"seconds": seconds, "selected": model.get_selected_features().numpy().tolist()})
print(json.dumps({"fits": fits, "torch": torch.__version__}))
"""


def problem(n: int, p: int, k: int, density: float, seed: int):
    """l0-python's recovery design: k coefficients in +-{1,2,3}, N(0, 0.5^2) entries kept with
    probability ``density``, neighbouring columns correlated, intercept 30, noise sd 1.5.
    """
    rng = np.random.default_rng(seed)
    support = np.sort(rng.choice(p, k, replace=False))
    b = np.zeros(p)
    b[support] = rng.choice([-3, -2, -1, 1, 2, 3], k)
    X = sp.random(
        n, p, density=density, format="csc", random_state=rng, data_rvs=lambda m: 0.5 * rng.standard_normal(m)
    )
    # Correlation as in l0-python's test: column i+1 += 0.3 column i where both are present.
    cols = [X[:, i] for i in range(p)]
    for i in range(0, p - 1, 2):
        both = cols[i].multiply(cols[i + 1] != 0)
        cols[i + 1] = cols[i + 1] + 0.3 * both
    X = sp.hstack(cols, format="csr")
    y = 30 + X @ b + 1.5 * rng.standard_normal(n)
    return X, y, support, b


def scores(selected, support) -> tuple[float, float]:
    hits = len(set(np.asarray(selected).tolist()) & set(support.tolist()))
    return hits / max(len(selected), 1), hits / len(support)


def save(X: sp.csr_matrix, y: np.ndarray, folder: str) -> str:
    path = os.path.join(folder, "data.npz")
    np.savez(path, data=X.data, indices=X.indices, indptr=X.indptr, shape=np.array(X.shape), y=y)
    return path


def time_l0jax_fit(X, y, lam, lr, epochs):
    """(seconds per epoch without compilation, compile seconds, fitted model)."""
    start = time.perf_counter()
    l0jax.SparseL0Linear(X.shape[1], seed=0).fit(X, y, lambda_reg=lam, lr=lr, epochs=epochs)
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        model = l0jax.SparseL0Linear(X.shape[1], seed=0).fit(X, y, lambda_reg=lam, lr=lr, epochs=epochs)
        best = min(best, time.perf_counter() - start)
    return best / epochs, max(first - best, 0.0), model


def ols_mse(X, y) -> float:
    from sklearn.linear_model import LinearRegression

    return float(np.mean((y - LinearRegression().fit(X, y).predict(X)) ** 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller problems and fewer epochs (smoke test)")
    parser.add_argument(
        "--full-reference",
        action="store_true",
        help="run l0-python on all 20 lambdas of the path (about 6 minutes) instead of 4",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (timings on a shared machine are noisy)")

    cases = [("l0-python test problem", 1000, 100, 5, 0.05, 2000)]
    if not args.quick:
        cases.append(("larger sparse problem", 20_000, 2_000, 20, 0.05, 300))
    else:
        cases.append(("larger sparse problem (quick)", 4_000, 400, 10, 0.05, 200))
    lr = 0.01
    folder = tempfile.mkdtemp(prefix="l0jax-bench-")

    print("\n1. One fit: time per epoch (compilation excluded, reported apart) and support recovery")
    print(
        f"{'problem':<30} {'n x p':>13} {'nnz':>9} {'epochs':>6} {'backend':>7} {'l0jax ms/ep':>11} "
        f"{'compile s':>9} {'l0-python ms/ep':>15} {'speed-up':>8} {'l0jax P/R':>10} {'l0-python P/R':>13}"
    )
    path_case = None
    for label, n, p, k, density, epochs in cases:
        X, y, support, b_true = problem(n, p, k, density, seed=12543)
        lam = 0.01 * ols_mse(X, y)  # l0-python's test choice: 1% of the OLS residual variance
        per_epoch, compile_s, model = time_l0jax_fit(X, y, lam, lr, epochs)
        backend = as_operator(X).backend  # what backend="auto" chose
        ours = scores(model.get_selected_features(), support)
        payload = {"file": save(X, y, folder), "lambdas": [lam], "lr": lr, "epochs": epochs}
        ref = run_reference(REFERENCE, payload)
        ref_ms, ratio, ref_pr = "n/a", "n/a", "n/a"
        if ref:
            ref_epoch = ref["fits"][0]["seconds"] / epochs
            theirs = scores(ref["fits"][0]["selected"], support)
            ref_ms, ratio = f"{1e3 * ref_epoch:.3f}", f"{ref_epoch / per_epoch:.1f}x"
            ref_pr = f"{theirs[0]:.2f}/{theirs[1]:.2f}"
        print(
            f"{label:<30} {f'{n}x{p}':>13} {X.nnz:>9} {epochs:>6} {backend:>7} {1e3 * per_epoch:11.3f} "
            f"{compile_s:9.2f} {ref_ms:>15} {ratio:>8} {f'{ours[0]:.2f}/{ours[1]:.2f}':>10} {ref_pr:>13}"
        )
        if path_case is None:
            path_case = (X, y, support, b_true, lam, epochs)

    X, y, support, b_true, lam, epochs = path_case
    lambdas = lam * np.geomspace(0.1, 10.0, 20)
    print(f"\n2. A 20-lambda path on the l0-python test problem ({epochs} epochs per lambda)")
    start = time.perf_counter()
    l0jax.l0_path(X, y, lambdas, lr=lr, epochs=epochs)
    first = time.perf_counter() - start
    start = time.perf_counter()
    path = l0jax.l0_path(X, y, lambdas, lr=lr, epochs=epochs)
    ours_s = time.perf_counter() - start
    ref_lambdas = lambdas if args.full_reference else lambdas[::5]
    ref = run_reference(
        REFERENCE, {"file": save(X, y, folder), "lambdas": ref_lambdas.tolist(), "lr": lr, "epochs": epochs}
    )
    scale = len(lambdas) / len(ref_lambdas)
    ref_s = scale * sum(f["seconds"] for f in ref["fits"]) if ref else float("nan")
    how = "20 sequential fits" if scale == 1 else f"{len(ref_lambdas)} fits x {scale:g} (extrapolated)"
    print(f"{'':<44} {'seconds':>8}")
    compile_s = max(first - ours_s, 0)
    print(f"{'l0jax l0_path (one vmapped run)':<44} {ours_s:8.2f}   (+{compile_s:.2f} s compilation, once)")
    print(f"{'l0-python, ' + how:<44} {ref_s:8.2f}   ({ref_s / ours_s:.0f}x l0jax)")
    print(f"{'l0jax per lambda-epoch':<44} {1e3 * ours_s / (20 * epochs):8.4f} ms")

    print("\n3. Support recovery at equal active counts: l0jax path vs scikit-learn Lasso path")
    from sklearn.linear_model import lasso_path

    Xd = X.toarray()
    Xc, yc = Xd - Xd.mean(0), y - y.mean()
    alpha_max = np.max(np.abs(Xc.T @ yc)) / X.shape[0]
    start = time.perf_counter()
    _, coefs, _ = lasso_path(Xc, yc, alphas=np.geomspace(alpha_max, alpha_max * 1e-4, 1000))
    lasso_s = time.perf_counter() - start
    counts = np.sum(coefs != 0, axis=0)
    norm = np.linalg.norm(b_true)
    print(f"(Lasso path: 1,000 alphas in {lasso_s:.2f} s; l0jax path: 20 lambdas in {ours_s:.2f} s)")
    print("P = precision, R = recall of the true features; err = ||coef - b|| / ||b||")
    print(
        f"{'lambda':>9} {'active':>6} {'l0jax P':>7} {'R':>5} {'err':>5} {'Lasso P':>7} {'R':>5} {'err':>5}"
    )
    for i in range(len(lambdas)):
        k = int(path.n_active[i])
        if k == 0:
            continue
        ours = scores(np.flatnonzero(path.gates[i] > 0.01), support)
        ours_err = np.linalg.norm(path.coef[i] - b_true) / norm
        same = np.flatnonzero(counts == k)
        if same.size:
            lasso = coefs[:, same[0]]
            theirs = scores(np.flatnonzero(lasso), support)
            lasso_cols = f"{theirs[0]:7.2f} {theirs[1]:5.2f} {np.linalg.norm(lasso - b_true) / norm:5.2f}"
        else:
            lasso_cols = f"{'(none with ' + str(k) + ')':>19}"
        print(f"{lambdas[i]:9.4f} {k:6d} {ours[0]:7.2f} {ours[1]:5.2f} {ours_err:5.2f} {lasso_cols}")
    if ref:
        print(f"\nreference: l0-python SparseL0Linear on torch {ref['torch']} (CPU, 2 threads)")


SUBSET_PEERS = r"""
import json, sys, time, warnings
import numpy as np
from abess.linear import LinearRegression as Abess
from sklearn.linear_model import LassoCV
import abess, sklearn
warnings.filterwarnings("ignore")
cfg = json.load(sys.stdin)
d = np.load(cfg["file"])
out = []
for r in range(d["X"].shape[0]):
    X, y = d["X"][r], d["y"][r]
    fit = {}
    start = time.perf_counter()
    # abess's own tuning: its default support-size range and information criterion (EBIC).
    model = Abess().fit(X, y)
    fit["abess"] = {"seconds": time.perf_counter() - start, "coef": model.coef_.tolist(),
                    "intercept": float(model.intercept_)}
    start = time.perf_counter()
    lasso = LassoCV(cv=5, n_jobs=1, random_state=0).fit(X, y)
    fit["lassocv"] = {"seconds": time.perf_counter() - start, "coef": lasso.coef_.tolist(),
                      "intercept": float(lasso.intercept_)}
    out.append(fit)
print(json.dumps({"fits": out, "abess": abess.__version__, "sklearn": sklearn.__version__}))
"""

SUBSET_L0_PYTHON = r"""
import json, sys, time
import numpy as np, scipy.sparse as sp, torch
from l0.sparse import SparseL0Linear
torch.set_num_threads(2)
cfg = json.load(sys.stdin)
d = np.load(cfg["file"])
out = []
for r in range(d["X"].shape[0]):
    X, y, Xv, yv = d["X"][r], d["y"][r], d["Xv"][r], d["yv"][r]
    start, best = time.perf_counter(), None
    for lam in cfg["lambdas"][r]:   # the same grid as l0jax, chosen on the same validation set
        torch.manual_seed(0)
        model = SparseL0Linear(n_features=X.shape[1], seed=0)
        model.fit(sp.csr_matrix(X), y, lambda_reg=lam, lr=cfg["lr"], epochs=cfg["epochs"])
        pred = model.predict(sp.csr_matrix(Xv))
        pred = pred.detach().numpy() if hasattr(pred, "detach") else np.asarray(pred)
        val = float(np.mean((yv - pred) ** 2))
        if best is None or val < best[0]:
            coef = model.get_coefficients().detach().numpy() if hasattr(model.get_coefficients(), "detach") else np.asarray(model.get_coefficients())
            best = (val, coef.tolist(), float(model.bias.detach()) if model.bias is not None else 0.0)
    out.append({"seconds": (time.perf_counter() - start) / len(cfg["lambdas"][r]), "coef": best[1], "intercept": best[2]})
print(json.dumps({"fits": out, "torch": torch.__version__}))
"""


def subset_design(n: int, p: int, corr: str, snr: float, rng: np.random.Generator, n_test: int = 1000):
    """Hazimeh & Mazumder (2020) designs: X ~ N(0, Sigma), k = 10 coefficients equal to 1, noise
    variance Var(X beta) / SNR. ``corr`` is ``"exp0.2"`` (Sigma_ij = rho^|i-j|, the ten nonzeros
    equispaced) or ``"const0.5"`` (Sigma_ij = rho off the diagonal, the first ten nonzero).
    Returns training, validation (same size as training) and fresh test data, and beta.
    """
    kind, rho = corr[:-3], float(corr[-3:])
    beta = np.zeros(p)
    if kind == "exp":
        beta[np.round(np.linspace(0, p - 1, 10)).astype(int)] = 1.0
        # X = AR(1) columns: x_j = rho x_{j-1} + sqrt(1 - rho^2) e_j has Cov = rho^|i-j|.
        def draw(m):
            e = rng.standard_normal((m, p))
            X = np.empty((m, p))
            X[:, 0] = e[:, 0]
            for j in range(1, p):
                X[:, j] = rho * X[:, j - 1] + np.sqrt(1 - rho**2) * e[:, j]
            return X

        signal_var = sum(rho ** abs(i - j) for i in np.flatnonzero(beta) for j in np.flatnonzero(beta))
    else:
        beta[:10] = 1.0

        def draw(m):
            return np.sqrt(rho) * rng.standard_normal((m, 1)) + np.sqrt(1 - rho) * rng.standard_normal((m, p))

        signal_var = 10 + 90 * rho
    sigma = np.sqrt(signal_var / snr)
    X, Xv, Xt = draw(n), draw(n), draw(n_test)
    y = X @ beta + sigma * rng.standard_normal(n)
    yv = Xv @ beta + sigma * rng.standard_normal(n)
    return X, y, Xv, yv, Xt, beta


def subset_scores(coef, intercept, beta, Xt) -> tuple[float, float]:
    """(support F1, relative prediction error ||Xt (coef - beta) + intercept||^2 / ||Xt beta||^2)."""
    selected, true = np.asarray(coef) != 0, beta != 0
    hits = np.sum(selected & true)
    f1 = 2 * hits / (selected.sum() + true.sum())
    err = np.sum((Xt @ (np.asarray(coef) - beta) + intercept) ** 2) / np.sum((Xt @ beta) ** 2)
    return float(f1), float(err)


def subset_lambdas(y: np.ndarray) -> np.ndarray:
    """l0jax's grid: lambda is the MSE a feature must save; 20 values from var(y)/300 to var(y)/2."""
    return float(np.var(y)) * np.geomspace(1 / 300, 0.5, 20)


def subset_main(args) -> None:
    """Best-subset peers on the Hazimeh & Mazumder designs; one line per cell, JSON lines to --out."""
    import json

    print(f"machine: {machine()}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (timings on a shared machine are noisy)")
    ns = [int(v) for v in args.n.split(",")]
    ps = [int(v) for v in args.p.split(",")]
    corrs = args.corr.split(",")
    snrs = [float(v) for v in args.snr.split(",")]
    floor_cells = {tuple(c.split(":")) for c in args.l0_python_cells.split(",") if c}
    folder = tempfile.mkdtemp(prefix="l0jax-subset-")
    print(
        f"{'n':>4} {'p':>5} {'corr':>8} {'snr':>4} | {'F1 l0jax':>8} {'abess':>6} {'LassoCV':>7} {'l0-py':>6} | "
        f"{'err l0jax':>9} {'abess':>6} {'LassoCV':>7} {'l0-py':>6} | {'s/fit l0jax':>11} {'abess':>6} "
        f"{'LassoCV':>7} {'l0-py':>6}",
        flush=True,
    )
    for n in ns:
        for p in ps:
            for corr in corrs:
                for snr in snrs:
                    rng = np.random.default_rng([n, p, int(100 * float(corr[-3:])), int(snr), corr.startswith("exp")])
                    data = [subset_design(n, p, corr, snr, rng) for _ in range(args.reps)]
                    rows = {"l0jax": [], "abess": [], "lassocv": [], "l0-python": []}
                    for X, y, Xv, yv, Xt, beta in data:
                        start = time.perf_counter()
                        path = l0jax.l0_path(
                            X, y, subset_lambdas(y), X_val=Xv, y_val=yv, epochs=args.epochs, lr=args.lr
                        )
                        best = l0jax.select_lambda(path)
                        seconds = time.perf_counter() - start
                        coef = np.where(path.gates[best] > 0.5, path.coef[best], 0.0)
                        rows["l0jax"].append((*subset_scores(coef, path.intercept[best], beta, Xt), seconds))
                    file = os.path.join(folder, "cell.npz")
                    np.savez(
                        file,
                        X=np.stack([d[0] for d in data]),
                        y=np.stack([d[1] for d in data]),
                        Xv=np.stack([d[2] for d in data]),
                        yv=np.stack([d[3] for d in data]),
                    )
                    peers = run_reference(SUBSET_PEERS, {"file": file})
                    if peers:
                        for fit, (X, y, Xv, yv, Xt, beta) in zip(peers["fits"], data):
                            for name in ("abess", "lassocv"):
                                f = fit[name]
                                rows[name].append((*subset_scores(f["coef"], f["intercept"], beta, Xt), f["seconds"]))
                    if (str(n), str(p), corr, f"{snr:g}") in floor_cells:
                        ref = run_reference(
                            SUBSET_L0_PYTHON,
                            {
                                "file": file,
                                "lambdas": [subset_lambdas(d[1])[::4].tolist() for d in data],
                                "lr": 0.01,
                                "epochs": 1000,
                            },
                        )
                        if ref:
                            for f, (X, y, Xv, yv, Xt, beta) in zip(ref["fits"], data):
                                rows["l0-python"].append((*subset_scores(f["coef"], f["intercept"], beta, Xt), f["seconds"]))
                    mean = {k: np.mean(v, axis=0) if v else None for k, v in rows.items()}
                    # l0jax's first fit of a shape includes compilation: the median time is reported.
                    med = {k: np.median(np.asarray(v)[:, 2]) if v else None for k, v in rows.items()}
                    cell = lambda k, i: f"{mean[k][i]:.3f}" if mean[k] is not None else "-"  # noqa: E731
                    tcell = lambda k: f"{med[k]:.3f}" if med[k] is not None else "-"  # noqa: E731
                    print(
                        f"{n:>4} {p:>5} {corr:>8} {snr:>4g} | {cell('l0jax', 0):>8} {cell('abess', 0):>6} "
                        f"{cell('lassocv', 0):>7} {cell('l0-python', 0):>6} | {cell('l0jax', 1):>9} "
                        f"{cell('abess', 1):>6} {cell('lassocv', 1):>7} {cell('l0-python', 1):>6} | "
                        f"{tcell('l0jax'):>11} {tcell('abess'):>6} {tcell('lassocv'):>7} {tcell('l0-python'):>6}",
                        flush=True,
                    )
                    if args.out:
                        with open(args.out, "a") as f:
                            record = {"n": n, "p": p, "corr": corr, "snr": snr, "reps": args.reps}
                            record.update({k: [list(map(float, r)) for r in v] for k, v in rows.items()})
                            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    import sys

    if "--subset" in sys.argv:
        parser = argparse.ArgumentParser(description=subset_main.__doc__)
        parser.add_argument("--subset", action="store_true")
        parser.add_argument("--n", default="100,500")
        parser.add_argument("--p", default="100,1000")
        parser.add_argument("--corr", default="exp0.2,exp0.5,exp0.8,const0.5")
        parser.add_argument("--snr", default="1,5")
        parser.add_argument("--reps", type=int, default=10)
        parser.add_argument("--epochs", type=int, default=500)
        parser.add_argument("--lr", type=float, default=0.05)
        parser.add_argument(
            "--l0-python-cells",
            default="100:100:exp0.5:5,500:100:exp0.5:5",
            help="cells n:p:corr:snr where l0-python's SparseL0Linear also runs (the floor)",
        )
        parser.add_argument("--out", default="", help="append one JSON line of raw results per cell")
        subset_main(parser.parse_args())
    else:
        main()
