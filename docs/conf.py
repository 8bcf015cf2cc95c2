"""Sphinx configuration of the l0jax documentation (``make docs``).

The pages are MyST Markdown; those with ``{code-cell}`` blocks, and the notebooks under
``notebooks/``, are executed at every build by myst-nb, so each example on the site runs and
shows its real output. The API reference is written from ``__all__`` (``_ext/apigen.py``).
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import sys
import textwrap
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
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "_readme_draft.md", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# --- API reference ------------------------------------------------------------------------------
apigen.write_api_pages(DOCS)
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Signatures show the library's type aliases by name rather than their expanded unions.
autodoc_type_aliases = {
    name: name
    for name in (
        "ArrayLike",
        "DTypeLike",
        "MatrixLike",
        "CalibrationMatrix",
        "DevicesLike",
        "DeviceLike",
        "Backend",
        "EvalRule",
        "NoiseKind",
        "LossType",
        "Distance",
        "GramLayout",
        "CalibrationMethod",
        "ReplicateMethod",
        "ModelKind",
        "ScheduleKind",
        "Granularity",
        "PenaltyUnit",
        "SizeUnit",
        "ChainSpec",
        "Pool",
        "Schedule",
    )
}
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


def _plain_default(node: ast.expr) -> str:
    """A default value as written in the source, or its value when it is a plain literal."""
    try:
        return repr(ast.literal_eval(node))
    except ValueError:
        return ast.unparse(node)


def _constructor_signature(app, what, name, obj, options, signature, return_annotation):
    """Flax NNX classes: the constructor's signature rather than ``(*args, **kwargs)``.

    Autodoc shows the ``__call__`` of a class's metaclass when there is one, and Flax's module
    metaclass takes ``(*args, **kwargs)``; the signature is read from the ``__init__`` source.
    """
    if what != "class" or type(obj).__call__ is type.__call__:
        return None
    if not inspect.isfunction(obj.__init__):  # no constructor of its own: takes no arguments
        return "()", None
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj.__init__)))
    args = tree.body[0].args
    positional = args.posonlyargs + args.args
    with_default = positional[len(positional) - len(args.defaults) :]
    defaults = {a.arg: d for a, d in zip(with_default, args.defaults, strict=True)}
    defaults.update(
        {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None}
    )

    def param(a: ast.arg) -> str:
        text = a.arg + (f": {ast.unparse(a.annotation)}" if a.annotation else "")
        return text + (f" = {_plain_default(defaults[a.arg])}" if a.arg in defaults else "")

    parts = [param(a) for a in positional[1:]]
    parts += [f"*{args.vararg.arg}"] if args.vararg else (["*"] if args.kwonlyargs else [])
    parts += [param(a) for a in args.kwonlyargs]
    parts += [f"**{args.kwarg.arg}"] if args.kwarg else []
    return f"({', '.join(parts)})", None


def _alias_names(app, what, name, obj, options, signature, return_annotation):
    """Type aliases by their names: autodoc writes an alias inside a union as ``TypeAliasForwardRef('X')``."""

    def plain(text: str | None) -> str | None:
        return text and re.sub(r"TypeAliasForwardRef\('([^']+)'\)", r"\1", text)

    if "TypeAliasForwardRef" not in (signature or "") + (return_annotation or ""):
        return None
    return plain(signature), plain(return_annotation)


def _check_api_pages(app, exception) -> None:
    """Fails the build (a warning, an error under -W) when a public name has no page."""
    if exception is None and app.builder.format == "html":
        for name in apigen.missing_pages(Path(app.outdir)):
            logging.getLogger(__name__).warning(f"no API page for {name} (it is in __all__)")


def setup(app) -> None:
    """Registers the hooks above."""
    app.connect("source-read", _notebook_size)
    app.connect("autodoc-skip-member", _skip_tuple_fields)
    app.connect("autodoc-process-signature", _constructor_signature)
    app.connect("autodoc-process-signature", _alias_names)
    app.connect("build-finished", _check_api_pages)


# --- HTML ----------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"l0jax {version}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
