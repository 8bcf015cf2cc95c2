"""The ``l0jax`` command line: ``calibrate`` round trip, resume, one-line errors for bad files; the
hard-concrete demo under its new name; ``l0jax demo`` itself is in test_production_worldbank.py.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from l0jax._src import cli
from l0jax._src.calibration.diagnostics import LOG_COLUMNS


@dataclass(frozen=True)
class Problem:
    """A calibration problem written to files: ``M.npz``, ``targets.csv`` (named t0, t1, ...) and
    ``w0.csv`` (initial weights 1) in ``folder``.
    """

    folder: Path
    M: sp.csr_matrix
    y: np.ndarray

    def calibrate(self, out, *options, **files):
        """``l0jax calibrate --out out *options`` on the problem's matrix and targets; a keyword such
        as ``matrix=path`` or ``initial_weights=path`` gives the file of that option instead.
        Returns the exit status.
        """
        paths = {"matrix": self.folder / "M.npz", "targets": self.folder / "targets.csv", **files}
        argv = ["calibrate", "--out", out, *options]
        for name, path in paths.items():
            argv += ["--" + name.replace("_", "-"), path]
        return _run(*argv)


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    M = sp.random(20, 500, density=0.3, format="csr", random_state=rng)
    y = M @ rng.uniform(0.5, 2.0, 500)
    sp.save_npz(d / "M.npz", M)
    (d / "targets.csv").write_text("name,value\n" + "".join(f"t{i},{float(v)!r}\n" for i, v in enumerate(y)))
    (d / "w0.csv").write_text("weight\n" + "1.0\n" * 500)
    return Problem(d, M, y)


def _run(*argv):
    return cli.main([str(a) for a in argv])


def _weights(out):
    """The weights a run wrote to ``out/weights.csv``."""
    return np.array([float(r["weight"]) for r in csv.DictReader(open(out / "weights.csv"))])


def test_calibrate_round_trip(problem, tmp_path, capsys):
    M, y = problem.M, problem.y
    out = tmp_path / "run"
    options = (
        "--initial-weights",
        problem.folder / "w0.csv",
        "--target-active",
        100,
        "--epochs",
        400,
        "--quiet",
    )
    rc = problem.calibrate(out, *options)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "calibrated 20 targets over 500 households" in printed
    w = _weights(out)
    assert w.shape == (500,) and np.all(w >= 0)
    assert abs(np.count_nonzero(w) - 100) <= 5
    diag = list(csv.DictReader(open(out / "diagnostics.csv")))
    assert [r["name"] for r in diag] == [f"t{i}" for i in range(20)]
    np.testing.assert_allclose([float(r["estimate"]) for r in diag], M @ w, rtol=1e-6)
    np.testing.assert_allclose([float(r["target"]) for r in diag], y)
    assert max(abs(float(r["rel_error"])) for r in diag) < 0.01
    log = list(csv.reader(open(out / "log.csv")))
    assert tuple(log[0]) == LOG_COLUMNS and len(log) == 1 + 4 * 20  # 4 chunks of 100 epochs x 20 targets
    assert {r[0] for r in log[1:]} == {"100", "200", "300", "400"}
    config = json.loads((out / "run_config.json").read_text())
    assert config["arguments"]["target_active"] == "100" and config["arguments"]["epochs"] == 400
    assert config["result"]["active"] == np.count_nonzero(w)
    assert config["problem"] == {
        "targets": 20,
        "households": 500,
        "fingerprint": config["problem"]["fingerprint"],
    }
    assert config["weights"]["active"] == np.count_nonzero(w)
    assert (out / "checkpoint.npz").is_file()

    # Rerunning into the same folder refuses to overwrite the checkpoint; --resume continues it
    # (here: already finished, so only the polish runs) and gives the same weights.
    assert problem.calibrate(out, *options) == 2
    assert "pass --resume to continue it, or --overwrite" in capsys.readouterr().err
    assert problem.calibrate(out, *options, "--resume") == 0
    np.testing.assert_array_equal(_weights(out), w)


def test_resume_after_an_interruption_gives_the_uninterrupted_weights(problem, tmp_path):
    options = ["--quiet", "--log-every", 50]
    assert problem.calibrate(tmp_path / "full", *options, "--epochs", 300) == 0
    assert problem.calibrate(tmp_path / "part", *options, "--epochs", 150) == 0  # "interrupted" at 150
    assert problem.calibrate(tmp_path / "part", *options, "--epochs", 300, "--resume") == 0
    np.testing.assert_array_equal(_weights(tmp_path / "part"), _weights(tmp_path / "full"))
    epochs = [int(r[0]) for r in list(csv.reader(open(tmp_path / "part" / "log.csv")))[1::20]]
    assert epochs == [50, 100, 150, 200, 250, 300]


@pytest.mark.parametrize(
    "make, option, message",
    [
        (
            lambda d: (d / "bad.csv").write_text("name,value\nt0,1\nt1,abc\n"),
            "targets",
            "bad.csv: line 3: 'abc' is not a number",
        ),
        (
            lambda d: (d / "bad.csv").write_text("name,value\n" + "t,1\n" * 7),
            "targets",
            "bad.csv: 7 targets, but the matrix",
        ),
        (
            lambda d: (d / "bad.csv").write_text("name,amount\nt,1\n"),
            "targets",
            "bad.csv: the header ['name', 'amount'] has no 'value'",
        ),
        (lambda d: (d / "bad.csv").write_text(""), "targets", "bad.csv: the file is empty"),
        (
            lambda d: (d / "bad.npz").write_bytes(b"PK\x03\x04 truncated"),
            "matrix",
            "bad.npz: cannot read it as a matrix",
        ),
        (
            lambda d: np.savez(d / "bad.npz", a=np.ones(3), b=np.ones(3)),
            "matrix",
            "bad.npz: expected a scipy sparse",
        ),
        (lambda d: (d / "bad.txt").write_text("1 2"), "matrix", "bad.txt: unknown matrix format '.txt'"),
        (lambda d: None, "matrix", "missing.npz: no such file"),
        (
            lambda d: (d / "bad.csv").write_text("1\n-2\n" + "1\n" * 498),
            "initial_weights",
            "bad.csv: weights must be >= 0; found 1 negative value(s)",
        ),
        (
            lambda d: (d / "bad.csv").write_text("1\n" * 10),
            "initial_weights",
            "bad.csv: 10 weights, but the matrix",
        ),
    ],
)
def test_bad_files_give_one_line_errors(problem, tmp_path, capsys, make, option, message):
    make(tmp_path)
    bad = {option: tmp_path / message.split(":")[0]}
    assert problem.calibrate(tmp_path / "out", "--epochs", 10, "--quiet", **bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("l0jax calibrate: error: ")
    assert message in err
    assert not (tmp_path / "out" / "weights.csv").exists()


def test_bad_option_values_are_one_line_errors(problem, tmp_path, capsys):
    rc = problem.calibrate(tmp_path / "o", "--target-active", 0, "--quiet")
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "target_active must be a count between 1 and" in err


def test_demo_gates_keeps_the_hard_concrete_demo(capsys):
    assert _run("demo-gates", "--draws", 20_000) == 0
    out = capsys.readouterr().out
    assert "against the closed forms" in out and "Temperature schedules" in out


@pytest.mark.parametrize(
    "value, message",
    [
        ("abc", "--target-active: 'abc' is not a number; give a count of households"),
        ("1e9", "target_active must be a count between 1 and the number of households (500), got 1000000000"),
    ],
)
def test_target_active_that_is_not_a_count_or_fraction_is_a_one_line_error(
    problem, tmp_path, capsys, value, message
):
    rc = problem.calibrate(tmp_path / "o", "--target-active", value, "--epochs", 10, "--quiet")
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("l0jax calibrate: error: ") and message in err
    assert not (tmp_path / "o").exists()


def test_target_active_in_scientific_notation_is_a_count(problem, tmp_path):
    out = tmp_path / "o"
    assert problem.calibrate(out, "--target-active", "1e2", "--epochs", 200, "--quiet") == 0
    w = _weights(out)
    assert abs(np.count_nonzero(w) - 100) <= 5


def test_matrix_without_columns_is_a_one_line_error_naming_the_file(problem, tmp_path, capsys):
    np.save(tmp_path / "E.npy", np.zeros((2, 0)))
    (tmp_path / "t.csv").write_text("1\n2\n")
    rc = problem.calibrate(tmp_path / "o", "--quiet", matrix=tmp_path / "E.npy", targets=tmp_path / "t.csv")
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{tmp_path / 'E.npy'}: M is empty (shape (2, 0))" in err


def test_non_finite_loss_is_a_one_line_error(problem, tmp_path, capsys):
    # A learning rate of 1e30 on the squared error overflows the weights within two epochs.
    rc = problem.calibrate(
        tmp_path / "o", "--lr", 1e30, "--loss", "mse", "--epochs", 20, "--log-every", 10, "--quiet"
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("l0jax calibrate: error: the training loss became NaN or infinite at epoch 2")


@pytest.mark.parametrize("bad", [["--targets", "missing.csv"], ["--lr", -1.0], ["--target-active", "abc"]])
def test_bad_invocation_with_overwrite_keeps_the_earlier_checkpoint(problem, tmp_path, capsys, bad):
    out = tmp_path / "run"
    options = ["--epochs", 20, "--log-every", 10, "--quiet"]
    assert problem.calibrate(out, *options) == 0
    before = (out / "checkpoint.npz").read_bytes()
    if bad[0] == "--targets":
        assert problem.calibrate(out, *options, "--overwrite", targets=tmp_path / bad[1]) == 2
    else:
        assert problem.calibrate(out, *options, *bad, "--overwrite") == 2
    assert "l0jax calibrate: error: " in capsys.readouterr().err
    assert (out / "checkpoint.npz").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.npz",
        "diagnostics.csv",
        "log.csv",
        "run_config.json",
        "weights.csv",
    ]


def test_overwrite_keeps_the_new_runs_checkpoint_when_it_fails_after_saving(
    problem, tmp_path, capsys, monkeypatch
):
    # A fit that diverges after saving states of its own leaves its last finite state (to resume with
    # another learning rate); the earlier run's checkpoint goes, as --overwrite asked.
    import l0jax

    out = tmp_path / "run"
    options = ["--epochs", 20, "--log-every", 10, "--quiet"]
    assert problem.calibrate(out, *options) == 0
    before = (out / "checkpoint.npz").read_bytes()

    def saves_then_diverges(*a, checkpoint_path, **kw):
        Path(checkpoint_path).write_bytes(b"the new run's state")
        raise FloatingPointError("the training loss became NaN or infinite at epoch 15")

    monkeypatch.setattr(l0jax, "calibrate", saves_then_diverges)
    assert problem.calibrate(out, *options, "--overwrite") == 2
    assert "NaN or infinite at epoch 15" in capsys.readouterr().err
    assert (out / "checkpoint.npz").read_bytes() == b"the new run's state" != before
    assert not (out / "checkpoint.npz.previous").exists()


def test_a_folder_of_column_blocks_gives_the_whole_matrix_result(problem, tmp_path):
    M = problem.M
    blocks = tmp_path / "blocks"
    blocks.mkdir()
    csc = M.tocsc()
    for i, (a, b) in enumerate([(0, 130), (130, 400), (400, 500)]):
        sp.save_npz(blocks / f"block_{i:03d}.npz", csc[:, a:b])
    options = ["--epochs", 200, "--quiet", "--devices", 1]
    assert problem.calibrate(tmp_path / "whole", *options) == 0
    assert problem.calibrate(tmp_path / "blocks_run", *options, matrix=blocks) == 0
    np.testing.assert_array_equal(_weights(tmp_path / "blocks_run"), _weights(tmp_path / "whole"))
    configs = [json.loads((tmp_path / f / "run_config.json").read_text()) for f in ("whole", "blocks_run")]
    assert configs[0]["problem"] == configs[1]["problem"]  # same fingerprint
    diag = list(csv.DictReader(open(tmp_path / "blocks_run" / "diagnostics.csv")))
    np.testing.assert_allclose(
        [float(r["estimate"]) for r in diag], M @ _weights(tmp_path / "blocks_run"), rtol=1e-6
    )


def test_a_folder_with_blocks_of_different_heights_is_a_one_line_error(problem, tmp_path, capsys):
    M = problem.M
    blocks = tmp_path / "blocks"
    blocks.mkdir()
    sp.save_npz(blocks / "a.npz", M[:, :100])
    sp.save_npz(blocks / "b.npz", M[:-1, 100:])
    assert problem.calibrate(tmp_path / "o", matrix=blocks) == 2
    err = capsys.readouterr().err
    assert "different numbers of rows" in err and err.count("\n") == 1


def test_beta_is_a_deprecated_alias_of_temperature(problem, tmp_path, capsys):
    base = ["--epochs", 50, "--quiet"]
    assert problem.calibrate(tmp_path / "new", *base, "--temperature", 0.4) == 0
    capsys.readouterr()
    assert problem.calibrate(tmp_path / "old", *base, "--beta", 0.4) == 0
    err = capsys.readouterr().err
    assert "l0jax calibrate: warning: --beta is deprecated; use --temperature (same meaning)." in err
    assert (tmp_path / "old" / "weights.csv").read_text() == (tmp_path / "new" / "weights.csv").read_text()
    for run in ("old", "new"):
        arguments = json.loads((tmp_path / run / "run_config.json").read_text())["arguments"]
        assert arguments["temperature"] == 0.4 and "beta" not in arguments
    assert problem.calibrate(tmp_path / "both", *base, "--temperature", 0.4, "--beta", 0.4) == 2
    assert "give --temperature or its deprecated alias --beta, not both" in capsys.readouterr().err
    assert not (tmp_path / "both").exists()
