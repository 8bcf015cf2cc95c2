"""The documentation covers the public API and l0-python's, and the API pages' examples run.

The API reference is written at build time from ``__all__`` by ``docs/_ext/apigen.py``; these
tests read ``__all__`` when they run, so names added later are checked too. (``make docs`` also
fails when a name's page is missing from the built site.)
"""

import ast
import doctest
import importlib
import importlib.util
import inspect
import os
import subprocess
from pathlib import Path

import jax
import pytest
from test_doctests import MODULES as DOCTESTED_MODULES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PUBLIC_MODULES = ["l0jax", "l0jax.nn", "l0jax.demo"]


def _apigen():
    spec = importlib.util.spec_from_file_location("apigen", DOCS / "_ext" / "apigen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _public_objects():
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            yield f"{module_name}.{name}", getattr(module, name)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_has_an_api_page(module_name, tmp_path):
    apigen = _apigen()
    module = importlib.import_module(module_name)
    listed = [name for _, names in apigen.api_sections(module_name) for name in names]
    assert len(listed) == len(set(listed)), f"names listed twice in the API reference: {listed}"
    missing = sorted(set(module.__all__) - set(listed))
    assert not missing, f"{module_name}.__all__ names missing from the API reference: {missing}"
    assert sorted(listed) == sorted(module.__all__)

    written = {path.name for path in apigen.write_api_pages(tmp_path)}
    index = (tmp_path / "api" / apigen.GENERATED / f"{module_name}.rst").read_text()
    for name in module.__all__:
        page = f"{module_name}.{name}.rst"
        assert page in written, f"no API page for {module_name}.{name}"
        directive = "autoclass" if inspect.isclass(getattr(module, name)) else "autofunction"
        assert f".. {directive}:: {name}" in (tmp_path / "api" / apigen.GENERATED / page).read_text()
        # The module's page links the name and lists its page in the (hidden) table of contents.
        assert f":py:obj:`~{module_name}.{name}`" in index and f"   {module_name}.{name}\n" in index


def test_stale_api_pages_are_removed(tmp_path):
    apigen = _apigen()
    out = tmp_path / "api" / apigen.GENERATED
    out.mkdir(parents=True)
    (out / "l0jax.removed_name.rst").write_text("a name that left __all__")
    apigen.write_api_pages(tmp_path)
    assert not (out / "l0jax.removed_name.rst").exists()
    assert (out / "l0jax.calibrate.rst").exists()


def test_api_sections_keep_unknown_modules():
    # A public name defined in a module the sections do not know still gets a page ("Other").
    apigen = _apigen()
    apigen.SECTIONS["l0jax"] = apigen.SECTIONS["l0jax"][:1]  # this instance only: forget most modules
    titles = dict(apigen.api_sections("l0jax"))
    assert "calibrate" in titles[apigen.OTHER]
    assert sum(len(names) for names in titles.values()) == len(importlib.import_module("l0jax").__all__)


@pytest.mark.parametrize(
    "qualname, obj", list(_public_objects()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_public_names_have_a_docstring(qualname, obj):
    # The module's page shows the first paragraph of each name's own docstring: a class must not
    # borrow its base class's (NamedTuple, Exception, nnx.Module).
    assert _apigen().summary(obj), f"{qualname} has no docstring of its own"


def _api_examples():
    """Docstring examples shown on the API pages that tests/integration/test_doctests.py does not run."""
    finder = doctest.DocTestFinder(recurse=True, exclude_empty=True)
    seen = set()
    for qualname, obj in _public_objects():
        if getattr(obj, "__module__", None) in DOCTESTED_MODULES:
            continue
        for test in finder.find(obj, qualname, globs={}):
            if test.examples and test.name not in seen:
                seen.add(test.name)
                yield test


@pytest.mark.parametrize("test", list(_api_examples()), ids=lambda t: t.name)
def test_api_page_examples_run(test):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    # Readers run the examples with JAX's default settings, not the suite's strict promotion.
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        result = runner.run(test)
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} examples of {test.name} failed (see above)"
    )


# Every public name of l0-python 0.6.2: ``l0.__all__`` and the public methods and attributes of its
# classes. docs/migration.md maps each one to l0jax.
L0_PYTHON_NAMES = {
    "HardConcrete": [
        "reset_parameters",
        "forward",
        "LOG_ALPHA_BOUND",
        "get_penalty",
        "get_active_prob",
        "get_sparsity",
        "get_num_active",
        "extra_repr",
    ],
    "L0Linear": [
        "reset_parameters",
        "forward",
        "get_l0_penalty",
        "get_l2_penalty",
        "get_sparsity",
        "extra_repr",
    ],
    "L0Conv2d": ["reset_parameters", "forward", "get_l0_penalty", "get_l2_penalty", "get_sparsity"],
    "L0DepthwiseConv2d": ["forward", "get_l0_penalty", "get_sparsity"],
    "SparseMLP": ["forward", "get_l0_loss", "get_l2_loss", "get_sparsity_stats"],
    "prune_model": [],
    "SparseL0Linear": [
        "LOG_ALPHA_BOUND",
        "get_deterministic_gates",
        "forward",
        "get_l0_penalty",
        "get_sparsity",
        "get_selected_features",
        "fit",
        "predict",
    ],
    "SparseCalibrationWeights": [
        "LOG_ALPHA_BOUND",
        "get_deterministic_gates",
        "get_weights",
        "forward",
        "get_l0_penalty",
        "get_l2_penalty",
        "get_sparsity",
        "get_active_weights",
        "fit",
        "predict",
    ],
    "L0Gate": ["get_gates", "apply_gates", "get_penalty", "get_active_indices"],
    "SampleGate": ["select_samples", "select_weighted_samples"],
    "FeatureGate": ["select_features", "select_features_with_names", "get_feature_importance"],
    "HybridGate": ["select", "get_penalty"],
    "compute_l0_penalty": [],
    "compute_l2_penalty": [],
    "compute_l0l2_penalty": [],
    "get_sparsity_stats": [],
    "get_active_parameter_count": [],
    "TemperatureScheduler": ["get_temperature"],
    "update_temperatures": [],
    "PenaltyTracker": ["log", "get_history", "get_stats", "clear", "save_to_csv", "plot_history"],
}


def test_migration_page_maps_every_l0_python_name():
    rows = [line for line in (DOCS / "migration.md").read_text().splitlines() if line.startswith("| `")]
    first_cells = [row.split("|")[1].strip() for row in rows]

    def mapped(name):
        return any(cell == f"`{name}`" or cell.startswith((f"`{name}(", f"`{name}.")) for cell in first_cells)

    missing = [name for name in L0_PYTHON_NAMES if not mapped(name)]
    missing += [
        f"{cls}.{member}"
        for cls, members in L0_PYTHON_NAMES.items()
        for member in members
        if not mapped(f"{cls}.{member}")
    ]
    assert not missing, f"docs/migration.md has no row for these l0-python names: {missing}"
    # Each row names an l0jax equivalent (or says "none" and why).
    assert all(row.count("|") >= 4 and row.split("|")[2].strip() for row in rows)


def _installed_l0_python():
    """The source folder of the installed l0-python package of the benchmarks' reference, if any."""
    python = os.environ.get("L0_PYTHON") or ROOT / ".venv-l0-python" / "bin" / "python"
    if not Path(python).exists():
        return None
    out = subprocess.run(  # find_spec locates the package without importing torch
        [
            str(python),
            "-c",
            "import importlib.util; print(importlib.util.find_spec('l0').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Path(out.stdout.strip()) if out.returncode == 0 else None


def _class_members(node: ast.ClassDef) -> list[str]:
    names = []
    for item in node.body:
        if isinstance(item, ast.FunctionDef):
            names.append(item.name)
        elif isinstance(item, ast.Assign):
            names += [t.id for t in item.targets if isinstance(t, ast.Name)]
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.append(item.target.id)
    return [name for name in names if not name.startswith("_")]


def _public_names(package: Path) -> dict[str, list[str]]:
    """``__all__`` of the package and, for its classes, their public methods and attributes."""
    init = ast.parse((package / "__init__.py").read_text())
    exported = next(
        ast.literal_eval(node.value)
        for node in init.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__"
    )
    members = {}
    for path in package.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name in exported:
                members[node.name] = _class_members(node)
            elif isinstance(node, ast.FunctionDef) and node.name in exported:
                members[node.name] = []
    assert sorted(members) == sorted(exported)
    return members


def test_recorded_l0_python_names_match_the_installed_package():
    package = _installed_l0_python()
    if package is None:
        pytest.skip("no l0-python reference environment (make bench-env, or set L0_PYTHON)")
    installed = _public_names(package)
    assert {k: sorted(v) for k, v in installed.items()} == {k: sorted(v) for k, v in L0_PYTHON_NAMES.items()}
