"""The ``l0jax`` command line: ``demo`` (World Bank survey calibration), ``demo-gates``, ``calibrate``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _core_demo(args: argparse.Namespace) -> int:
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    import l0jax

    n = args.draws
    print(f"l0jax {l0jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind})")
    print(f"Hard-concrete gates, {n:,} draws per row (seed {args.seed}), against the closed forms:")
    print(
        f"{'log_alpha':>9} {'beta':>6} | {'P(z=0)':>8} {'exact':>8} | {'P(z=1)':>8} {'exact':>8} | "
        f"{'P(z!=0)':>8} {'exact':>8}"
    )
    key = jax.random.key(args.seed)
    sample = jax.jit(l0jax.hard_concrete)
    for log_alpha in (-2.0, 0.0, 2.0):
        for beta in (0.25, 2 / 3):
            key, sub = jax.random.split(key)
            z = np.asarray(sample(sub, jnp.full((n,), log_alpha), beta))
            la = jnp.float32(log_alpha)
            print(
                f"{log_alpha:9.2f} {beta:6.3f} | {np.mean(z == 0):8.4f} {float(l0jax.prob_zero(la, beta)):8.4f} | "
                f"{np.mean(z == 1):8.4f} {float(l0jax.prob_one(la, beta)):8.4f} | "
                f"{np.mean(z != 0):8.4f} {float(l0jax.prob_nonzero(la, beta)):8.4f}"
            )
    print("\nTemperature schedules 2.0 -> 0.1 over 100 steps (as l0-python's TemperatureScheduler):")
    steps = (0, 25, 50, 75, 100)
    print(f"{'kind':>12} " + " ".join(f"{s:>7d}" for s in steps))
    for kind in ("exponential", "linear", "cosine"):
        schedule = l0jax.temperature_schedule(2.0, 0.1, 100, kind)
        print(f"{kind:>12} " + " ".join(f"{float(schedule(s)):7.4f}" for s in steps))
    t0 = time.perf_counter()
    log_alpha = jnp.zeros((1_000_000,))
    jax.block_until_ready(sample(key, log_alpha, 0.5))
    print(f"\nSampled 1,000,000 gates in {1e3 * (time.perf_counter() - t0):.1f} ms (including compilation).")
    return 0


# --------------------------------------------------------------------------------------------
# l0jax demo (World Bank survey calibration)
# --------------------------------------------------------------------------------------------


def _survey_demo(args: argparse.Namespace) -> int:
    try:
        import svy  # noqa: F401
    except ImportError:
        print(
            "l0jax demo: error: the demo's data come from the svy package: pip install 'l0jax[demo]' "
            "(or run `make demo`).",
            file=sys.stderr,
        )
        return 2
    from l0jax.demo import run_demo

    run_demo(args.out, keep=args.keep, epochs=args.epochs, seed=args.seed, plot=not args.no_plot)
    return 0


# --------------------------------------------------------------------------------------------
# l0jax calibrate
# --------------------------------------------------------------------------------------------


class InputError(Exception):
    """A bad input file: reported as one line naming the file and the problem."""

    def __init__(self, path: Any, problem: str):
        super().__init__(f"{path}: {problem}")


def _read_matrix(path: Path) -> Any:
    import numpy as np
    import scipy.sparse as sp

    if path.is_dir():  # column blocks, one .npz per block, loaded only where a device needs them
        from l0jax._src.calibration.blocks import ColumnBlocks

        try:
            return ColumnBlocks.from_npz_folder(path)
        except ValueError as err:
            raise InputError(path, str(err)) from None
    if not path.is_file():
        raise InputError(path, "no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            try:
                # scipy-stubs types load_npz's result as the formats' private base class, whose
                # tocsr is declared per format.
                return sp.load_npz(path).tocsr()  # pyright: ignore[reportAttributeAccessIssue]
            except (ValueError, KeyError):
                pass
            with np.load(path, allow_pickle=False) as z:
                arrays = [z[k] for k in z.files]
            if len(arrays) == 1 and arrays[0].ndim == 2:
                return arrays[0]
            raise InputError(
                path,
                "expected a scipy sparse matrix saved with scipy.sparse.save_npz, or an .npz "
                f"holding one 2-D array (found {len(arrays)} array(s))",
            )
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            if arr.ndim != 2:
                raise InputError(
                    path, f"expected a 2-D array (targets x households), got {arr.ndim} dimension(s)"
                )
            return arr
    except InputError:
        raise
    except Exception as err:  # zip, pickle or format errors from numpy/scipy
        raise InputError(path, f"cannot read it as a matrix ({type(err).__name__}: {err})") from err
    raise InputError(path, f"unknown matrix format {suffix!r}; use .npz (scipy.sparse.save_npz) or .npy")


def _parse_float(path: Path, line: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, f"line {line}: {text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InputError(path, f"line {line}: {text!r} is not a finite number")
    return value


def _read_rows(path: Path) -> list[list[str]]:
    import csv

    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        with open(path, newline="") as f:
            rows = [[c.strip() for c in row] for row in csv.reader(f) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(path, f"cannot read it as CSV ({type(err).__name__}: {err})") from err
    if not rows:
        raise InputError(path, "the file is empty")
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_targets(path: Path) -> tuple[list[str], Any]:
    """Targets CSV: ``name,value`` or ``value`` columns, with or without a header row."""
    import numpy as np

    rows = _read_rows(path)
    first = 1
    name_col, value_col = (0, 1) if len(rows[0]) >= 2 else (None, 0)
    if not _is_number(rows[0][-1]):  # a header row
        header = [h.lower() for h in rows[0]]
        value_col = next(
            (header.index(k) for k in ("value", "target", "targets", "total") if k in header), None
        )
        if value_col is None:
            raise InputError(path, f"the header {rows[0]} has no 'value' (or 'target') column")
        name_col = next((header.index(k) for k in ("name", "target_name", "variable") if k in header), None)
        first = 2
    body = rows[1:] if first == 2 else rows
    names, values = [], []
    for i, row in enumerate(body):
        line = i + first
        if len(row) <= value_col:
            raise InputError(path, f"line {line}: expected {value_col + 1} column(s), got {len(row)}")
        values.append(_parse_float(path, line, row[value_col]))
        names.append(row[name_col] if name_col is not None and name_col < len(row) else f"target_{i}")
    if not values:
        raise InputError(path, "no targets found")
    return names, np.asarray(values)


def _read_weights(path: Path) -> Any:
    """Initial weights: a .npy vector, or CSV with the weight in the last column (header optional)."""
    import numpy as np

    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise InputError(path, "no such file")
        try:
            w = np.load(path, allow_pickle=False)
        except Exception as err:
            raise InputError(path, f"cannot read it ({type(err).__name__}: {err})") from err
        if w.dtype.kind not in "biuf":  # text, complex, or a dtype NumPy saves as raw bytes (bfloat16)
            raise InputError(path, f"expected real numbers, got dtype {w.dtype}; save it as float64")
        w = np.asarray(w, np.float64).reshape(-1)
    else:
        rows = _read_rows(path)
        body = rows[1:] if not _is_number(rows[0][-1]) else rows
        offset = 2 if body is not rows else 1
        w = np.asarray([_parse_float(path, i + offset, r[-1]) for i, r in enumerate(body)])
    if not np.all(np.isfinite(w)):
        raise InputError(path, "weights must be finite numbers")
    if np.any(w < 0):
        raise InputError(path, f"weights must be >= 0; found {int(np.sum(w < 0))} negative value(s)")
    return w


def _target_active(text: str) -> int | float:
    """``--target-active``: a count of households, or a fraction in (0, 1)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise InputError(
            "--target-active",
            f"{text!r} is not a number; give a count of households (e.g. 1000) or a fraction (e.g. 0.05)",
        ) from None
    # A count written in scientific notation (1e3) means households, not a fraction.
    return int(value) if value >= 1 and value.is_integer() else value


def _calibrate_command(args: argparse.Namespace) -> int:
    import json
    import platform
    import time
    import warnings

    import numpy as np

    from l0jax._src.renamed import DEFAULT_TEMPERATURE

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if args.beta is not None:  # the deprecated name of --temperature
        if args.temperature is not None:
            print(
                "l0jax calibrate: error: give --temperature or its deprecated alias --beta, not both.",
                file=sys.stderr,
            )
            return 2
        print(
            "l0jax calibrate: warning: --beta is deprecated; use --temperature (same meaning).",
            file=sys.stderr,
        )
        args.temperature = args.beta
    vars(args).pop("beta")  # one name in run_config.json
    if args.temperature is None:
        args.temperature = DEFAULT_TEMPERATURE
    if args.num_processes is not None:  # one of several processes (possibly on several hosts)
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices talk through gloo
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id
        )
    try:
        M = _read_matrix(Path(args.matrix))
        names, y = _read_targets(Path(args.targets))
        if M.shape[0] != y.size:
            raise InputError(
                args.targets,
                f"{y.size} targets, but the matrix {args.matrix} has {M.shape[0]} rows (one per target)",
            )
        w0 = None
        if args.initial_weights is not None:
            w0 = _read_weights(Path(args.initial_weights))
            if w0.size != M.shape[1]:
                raise InputError(
                    args.initial_weights,
                    f"{w0.size} weights, but the matrix {args.matrix} has "
                    f"{M.shape[1]} columns (one per household)",
                )
        from l0jax._src.calibration.blocks import ColumnBlocks
        from l0jax._src.operators import check_matrix

        try:
            if not isinstance(M, ColumnBlocks):  # blocks are checked as they are loaded
                check_matrix(M, name="M")
        except ValueError as err:
            raise InputError(args.matrix, str(err)) from None
        target_active: Any = None
        if args.target_active is not None:
            target_active = _target_active(args.target_active)
            from l0jax._src.calibration.dual import resolve_target_active

            resolve_target_active(target_active, M.shape[1])  # before the output folder is touched
        if args.bounds is not None:
            from l0jax._src.calibration.model import check_weight_bounds

            try:
                check_weight_bounds(args.bounds)
            except ValueError as err:
                raise ValueError(f"--bounds {args.bounds[0]:g} {args.bounds[1]:g}: {err}") from None
    except (InputError, ValueError) as err:
        print(f"l0jax calibrate: error: {err}", file=sys.stderr)
        return 2

    import jax

    import l0jax
    from l0jax._src.calibration.checkpoint import fingerprint
    from l0jax._src.calibration.diagnostics import (
        CsvLog,
        check_targets,
        format_weight_summary,
        target_diagnostics,
        weight_summary,
    )

    # In a multi-process run the first process reports and writes the files; the others compute.
    lead = jax.process_index() == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if lead:
            check_targets(M, y, target_names=names, initial_weights=w0, loss_type=args.loss, warn=True)
    for w in caught:
        print(f"l0jax calibrate: warning: {w.message}", file=sys.stderr)

    out = Path(args.out)
    checkpoint = out / "checkpoint.npz"
    previous = None
    if checkpoint.exists() and not args.resume and lead:
        if not args.overwrite:
            print(
                f"l0jax calibrate: error: {checkpoint}: a checkpoint of an earlier run is there; pass --resume to "
                f"continue it, or --overwrite to start over.",
                file=sys.stderr,
            )
            return 2
        # Set aside rather than deleted: calibrate checks its own arguments (lr, epochs, ...) only
        # now, and a bad one must not cost the earlier run its checkpoint.
        previous = checkpoint.with_name(checkpoint.name + ".previous")
        checkpoint.replace(previous)
    out.mkdir(parents=True, exist_ok=True)
    log = CsvLog(out / "log.csv", names)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = l0jax.calibrate(
                M,
                y,
                key=args.seed,
                init_weights=w0,
                use_gates=not args.no_gates,
                target_active=target_active,
                lambda_l0=args.lambda_l0,
                lambda_l2=args.lambda_l2,
                lr=args.lr,
                epochs=args.epochs,
                loss_type=args.loss,
                temperature=args.temperature,
                init_keep_prob=args.init_keep_prob,
                distance=args.distance,
                distance_strength=args.distance_strength,
                polish=not args.no_polish,
                log_every=args.log_every,
                tol=args.tol,
                backend=args.backend,
                verbose=not args.quiet,
                callbacks=[log],
                checkpoint_path=checkpoint,
                checkpoint_every=args.checkpoint_every,
                resume=args.resume,
                warn_targets=False,
                devices=args.devices,
                weight_bounds=None if args.bounds is None else tuple(args.bounds),
            )
        for w in caught:
            print(f"l0jax calibrate: warning: {w.message}", file=sys.stderr)
    except (ValueError, FloatingPointError) as err:  # CheckpointError, NonFiniteLossError are among them
        if previous is not None:
            if checkpoint.exists():
                # The new run saved states of its own (a diverging fit keeps its last finite one,
                # to resume with another learning rate): --overwrite asked for that run.
                previous.unlink()
            else:
                previous.replace(checkpoint)
        print(f"l0jax calibrate: error: {err}", file=sys.stderr)
        return 2
    if previous is not None:
        previous.unlink()
    seconds = time.perf_counter() - t0
    if not lead:
        return 0

    with open(out / "weights.csv", "w") as f:
        f.write("household,weight\n")
        f.writelines(f"{i},{float(v)!r}\n" for i, v in enumerate(res.weights))
    diag = target_diagnostics(M, y, res.weights, target_names=names, initial_weights=w0)
    diag.to_csv(out / "diagnostics.csv")
    summary = weight_summary(res.weights, w0)
    config = {
        "command": "l0jax calibrate",
        "arguments": {k: v for k, v in vars(args).items() if k != "func"},
        "started": started,
        "seconds": round(seconds, 3),
        "l0jax": l0jax.__version__,
        "jax": jax.__version__,
        "device": jax.default_backend(),
        "python": platform.python_version(),
        "problem": {"targets": int(y.size), "households": int(M.shape[1]), "fingerprint": fingerprint(M, y)},
        "sharding": {"devices": args.devices, "processes": jax.process_count()},
        "result": {
            "active": res.active_count,
            "epochs": int(res.state.step),
            "max_abs_rel_error": diag.max_abs_rel_error,
            "mean_abs_rel_error": float(np.mean(np.abs(diag.rel_error))),
            "polish": res.polish,
        },
        "weights": summary,
        "files": {
            "weights": "weights.csv",
            "diagnostics": "diagnostics.csv",
            "log": "log.csv",
            "checkpoint": checkpoint.name,
            "config": "run_config.json",
        },
    }
    (out / "run_config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    print(f"calibrated {y.size} targets over {M.shape[1]:,} households in {seconds:.1f} s: {res.summary()}")
    print(format_weight_summary(summary))
    print(diag.format(top=min(10, y.size)))
    print(f"wrote {out}/weights.csv, diagnostics.csv, log.csv, run_config.json, {checkpoint.name}")
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Builds the argument parser of the ``l0jax`` command."""
    parser = argparse.ArgumentParser(
        prog="l0jax", description="L0 regularisation with hard-concrete gates in JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="survey calibration on the World Bank data bundled with svy (the main job)"
    )
    demo.add_argument("--out", default="out", help="folder for the plot of target errors (default: out)")
    demo.add_argument("--keep", type=int, default=1000, help="census households to keep in task (b)")
    demo.add_argument("--epochs", type=int, default=1000, help="epochs of each fit")
    demo.add_argument("--seed", type=int, default=0, help="PRNG seed")
    demo.add_argument("--no-plot", action="store_true", help="do not write the plot")
    demo.set_defaults(func=_survey_demo)

    gates = sub.add_parser("demo-gates", help="hard-concrete gates against their closed forms")
    gates.add_argument("--draws", type=int, default=200_000, help="Monte Carlo draws per row")
    gates.add_argument("--seed", type=int, default=0, help="PRNG seed")
    gates.set_defaults(func=_core_demo)

    cal = sub.add_parser(
        "calibrate",
        help="calibrate weights to targets from files",
        description="Finds sparse non-negative household weights w with M @ w close to the targets, and writes "
        "weights.csv, diagnostics.csv, log.csv (microcalibrate's schema), run_config.json and "
        "checkpoint.npz to --out.",
    )
    cal.add_argument(
        "--matrix",
        required=True,
        help="M (targets x households): scipy.sparse.save_npz .npz, or .npy; or a folder of .npz column "
        "blocks (sorted file names give the column order), loaded per device",
    )
    cal.add_argument(
        "--targets", required=True, help="CSV of targets: 'name,value' (header optional) or one column"
    )
    cal.add_argument("--initial-weights", help="CSV (weight in the last column) or .npy of design weights")
    cal.add_argument("--out", required=True, help="output folder")
    cal.add_argument("--target-active", help="keep K households (an integer) or a fraction (e.g. 0.05)")
    cal.add_argument("--epochs", type=int, default=1000)
    cal.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    cal.add_argument(
        "--lambda-l0", type=float, default=None, help="L0 strength (default 0.01, or 0 with --target-active)"
    )
    cal.add_argument("--lambda-l2", type=float, default=0.0)
    cal.add_argument("--loss", default="relative", choices=("relative", "relative_abs", "mse"))
    cal.add_argument("--temperature", type=float, help="gate temperature (default 2/3)")
    cal.add_argument("--beta", type=float, help="deprecated alias of --temperature")
    cal.add_argument("--init-keep-prob", type=float, default=0.5)
    cal.add_argument("--distance", choices=("chi2", "raking"), help="stay close to --initial-weights")
    cal.add_argument("--distance-strength", type=float, default=1e-3)
    cal.add_argument(
        "--bounds",
        type=float,
        nargs=2,
        metavar=("L", "U"),
        help="keep every active weight within [L, U] times its initial weight",
    )
    cal.add_argument("--no-gates", action="store_true", help="plain positive weights, no selection")
    cal.add_argument("--no-polish", action="store_true", help="skip the final refit of the active weights")
    cal.add_argument("--tol", type=float, help="stop early when every relative error is below this")
    cal.add_argument("--log-every", type=int, default=100, help="epochs per log row and progress update")
    cal.add_argument(
        "--checkpoint-every", type=int, help="epochs between checkpoints (default: every log row)"
    )
    cal.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    cal.add_argument("--overwrite", action="store_true", help="start over even if OUT/checkpoint.npz exists")
    cal.add_argument("--backend", default="auto", choices=("auto", "dense", "sparse", "ell", "scipy"))
    cal.add_argument(
        "--devices", type=int, help="split the households over this many devices (of all processes)"
    )
    cal.add_argument(
        "--coordinator", help="multi-process runs: HOST:PORT of process 0 (jax.distributed.initialize)"
    )
    cal.add_argument("--num-processes", type=int, help="multi-process runs: the number of processes")
    cal.add_argument("--process-id", type=int, help="multi-process runs: this process's index, 0 to N-1")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--quiet", action="store_true", help="no progress bar")
    cal.set_defaults(func=_calibrate_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``l0jax`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
