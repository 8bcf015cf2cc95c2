"""Sphinx configuration of the l0jax documentation (``make docs``).

The pages are MyST Markdown; those with ``{code-cell}`` blocks, and the notebooks under
``notebooks/``, are executed at every build by myst-nb, so each example on the site runs and
shows its real output. The API reference is written from ``__all__`` (``_ext/apigen.py``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from sphinx.util import logging

import l0jax

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

import apigen  # noqa: E402  (needs the path above)

project = "l0jax"
author = "l0jax developers"
copyright = "l0jax developers"
release = version = l0jax.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "_readme_draft.md", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# --- API reference ------------------------------------------------------------------------------
apigen.write_api_pages(DOCS)
autosummary_generate = True
autosummary_imported_members = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
add_module_names = False

# --- Executed pages and notebooks ----------------------------------------------------------------
# The notebooks live at the repository root (the test suite runs them too); the build renders
# copies, refreshed on every build.
shutil.rmtree(DOCS / "notebooks", ignore_errors=True)
shutil.copytree(ROOT / "notebooks", DOCS / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))

# Notebooks that the site renders at their short size (``L0JAX_NOTEBOOK_SMALL=1``, as the tests
# run them) to keep the build within a few minutes; the others run at full size. Setting
# L0JAX_NOTEBOOK_SMALL before the build applies it to every notebook.
SMALL_NOTEBOOKS = {"notebooks/survey_calibration", "notebooks/production_calibration"}
_SMALL_FROM_USER = os.environ.get("L0JAX_NOTEBOOK_SMALL")

# `-D nb_execution_mode=off` on the command line skips the execution (a quick look at the prose).
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True  # a failing example fails the build
nb_execution_show_tb = True
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# The kernels inherit this process's environment: the project's scripts (the ``l0jax`` command)
# must be on PATH, figures need no display, and the examples run with JAX's default settings.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ.setdefault("MPLBACKEND", "Agg")


def _notebook_size(app, docname: str, source: list[str]) -> None:
    """Sets the notebook size switch just before myst-nb reads (and executes) ``docname``."""
    if _SMALL_FROM_USER is not None:
        return
    if docname in SMALL_NOTEBOOKS:
        os.environ["L0JAX_NOTEBOOK_SMALL"] = "1"
    else:
        os.environ.pop("L0JAX_NOTEBOOK_SMALL", None)


def _skip_tuple_fields(app, what, name, obj, skip, options) -> bool | None:
    """Leaves out NamedTuple field accessors ("Alias for field number 0").

    The class docstring describes its fields; listing both would describe each field twice.
    """
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


def _check_api_pages(app, exception) -> None:
    """Fails the build (a warning, an error under -W) when a public name has no page."""
    if exception is None and app.builder.format == "html":
        for name in apigen.missing_pages(Path(app.outdir)):
            logging.getLogger(__name__).warning(f"no API page for {name} (it is in __all__)")


def setup(app) -> None:
    """Registers the hooks above."""
    app.connect("source-read", _notebook_size)
    app.connect("autodoc-skip-member", _skip_tuple_fields)
    app.connect("build-finished", _check_api_pages)


# --- HTML ----------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"l0jax {version}"
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
