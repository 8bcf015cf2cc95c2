"""API reference pages written from ``__all__`` at build time.

Every name in ``l0jax.__all__``, ``l0jax.nn.__all__`` and ``l0jax.demo.__all__`` gets a page of its
own, without anyone listing it by hand: a name added to ``__all__`` appears in the next build. Names
are grouped on the module's page by the private module that defines them (``SECTIONS``); a name from
a module not listed there lands in "Other" rather than being left out.
``tests/integration/test_docs_api.py`` checks this coverage against ``__all__`` at test time, and the
build checks that every page was written.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

# (module prefix of the definition, section title), first match wins.
SECTIONS: dict[str, list[tuple[str, str]]] = {
    "l0jax": [
        ("l0jax._src.hard_concrete", "Hard-concrete gates (pure functions)"),
        ("l0jax._src.schedules", "Temperature schedules"),
        ("l0jax._src.budget", "Size budget (pure functions)"),
        ("l0jax._src.calibration", "Survey calibration"),
        ("l0jax._src.regression", "Sparse regression"),
    ],
    "l0jax.nn": [
        ("l0jax._src.nn.gate", "Gates"),
        ("l0jax._src.nn.layers", "Layers"),
        ("l0jax._src.nn.data_gates", "Gates that select data"),
        ("l0jax._src.nn.model", "Model-wide utilities"),
        ("l0jax._src.nn.compress", "Compression"),
        ("l0jax._src.nn.structured", "Attention heads, MLP widths and blocks"),
        ("l0jax._src.nn.sizing", "Size, FLOPs and the size budget"),
    ],
    "l0jax.demo": [
        ("l0jax.demo._world_bank", "World Bank survey data"),
        ("l0jax.demo._run", "The ``l0jax demo`` run"),
    ],
}
OTHER = "Other"
GENERATED = "_generated"


def api_sections(module_name: str) -> list[tuple[str, list[str]]]:
    """Groups ``module_name.__all__`` into titled sections, in ``SECTIONS`` order.

    Args:
      module_name: a key of ``SECTIONS``: ``"l0jax"``, ``"l0jax.nn"`` or ``"l0jax.demo"``.

    Returns:
      A list of (title, names) pairs; together the names are exactly ``__all__``, each once.
    """
    module = importlib.import_module(module_name)
    groups: dict[str, list[str]] = {title: [] for _, title in SECTIONS[module_name]}
    groups[OTHER] = []
    for name in module.__all__:
        defined_in = getattr(getattr(module, name), "__module__", "") or ""
        title = next((t for prefix, t in SECTIONS[module_name] if defined_in.startswith(prefix)), OTHER)
        groups[title].append(name)
    return [(title, sorted(names, key=str.lower)) for title, names in groups.items() if names]


def summary(obj: object) -> str:
    """The first paragraph of ``obj``'s own docstring, on one line (empty without a docstring)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    paragraph = inspect.cleandoc(doc or "").split("\n\n")[0]
    return " ".join(paragraph.split())


def _underline(title: str, char: str) -> list[str]:
    return [title, char * len(title), ""]


def api_page(module_name: str) -> str:
    """The reStructuredText of a module's reference page: a table of its names per section."""
    module = importlib.import_module(module_name)
    lines = _underline(f"``{module_name}``", "=")
    lines += [f".. automodule:: {module_name}", "   :no-members:", ""]
    for section, names in api_sections(module_name):
        lines += _underline(section, "-")
        lines += [".. list-table::", "   :widths: 30 70", ""]
        for name in names:
            lines += [f"   * - :py:obj:`~{module_name}.{name}`", f"     - {summary(getattr(module, name))}"]
        lines += ["", ".. toctree::", "   :hidden:", ""]
        lines += [f"   {module_name}.{name}" for name in names]
        lines.append("")
    return "\n".join(lines)


def object_page(module_name: str, name: str) -> str:
    """The reStructuredText of one public name's page."""
    obj = getattr(importlib.import_module(module_name), name)
    lines = _underline(f"{module_name}.{name}", "=") + [f".. currentmodule:: {module_name}", ""]
    if inspect.isclass(obj):
        lines += [f".. autoclass:: {name}", "   :members:", "   :special-members: __call__"]
    elif callable(obj):
        lines += [f".. autofunction:: {name}"]
    else:
        lines += [f".. autodata:: {name}"]
    return "\n".join(lines) + "\n"


def write_api_pages(srcdir: Path) -> list[Path]:
    """Writes ``api/_generated/``: a page per module and per public name; removes stale pages."""
    out = srcdir / "api" / GENERATED
    out.mkdir(parents=True, exist_ok=True)
    pages = {}
    for module_name in SECTIONS:
        pages[f"{module_name}.rst"] = api_page(module_name)
        for name in importlib.import_module(module_name).__all__:
            pages[f"{module_name}.{name}.rst"] = object_page(module_name, name)
    for stale in set(p.name for p in out.glob("*.rst")) - set(pages):
        (out / stale).unlink()
    for filename, text in pages.items():
        path = out / filename
        if not path.exists() or path.read_text() != text:  # unchanged files keep Sphinx's cache valid
            path.write_text(text)
    return [out / filename for filename in pages]


def missing_pages(outdir: Path) -> list[str]:
    """Public names whose HTML page is not in the built site ``outdir``."""
    missing = []
    for module_name in SECTIONS:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if not (outdir / "api" / GENERATED / f"{module_name}.{name}.html").exists():
                missing.append(f"{module_name}.{name}")
    return missing
