"""API reference pages written from ``__all__`` at build time.

Every name in ``l0jax.__all__`` and ``l0jax.nn.__all__`` gets an autosummary entry, and so a page
of its own, without anyone listing it by hand: a name added to ``__all__`` appears in the next
build. Names are grouped by the private module that defines them (``SECTIONS``); a name from a
module not listed there lands in "Other" rather than being left out. ``tests/test_docs_api.py``
checks this coverage against ``__all__`` at test time.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# (module prefix of the definition, section title), first match wins.
SECTIONS: dict[str, list[tuple[str, str]]] = {
    "l0jax": [
        ("l0jax._src.hard_concrete", "Hard-concrete gates (pure functions)"),
        ("l0jax._src.schedules", "Temperature schedules"),
        ("l0jax._src.calibration", "Survey calibration"),
        ("l0jax._src.regression", "Sparse regression"),
    ],
    "l0jax.nn": [
        ("l0jax._src.nn.gate", "Gates"),
        ("l0jax._src.nn.layers", "Layers"),
        ("l0jax._src.nn.data_gates", "Gates that select data"),
        ("l0jax._src.nn.model", "Model-wide utilities"),
        ("l0jax._src.nn.compress", "Compression"),
    ],
}
OTHER = "Other"
TITLES = {"l0jax": "``l0jax``", "l0jax.nn": "``l0jax.nn``"}
GENERATED = "_generated"


def api_sections(module_name: str) -> list[tuple[str, list[str]]]:
    """Groups ``module_name.__all__`` into titled sections, in ``SECTIONS`` order.

    Args:
      module_name: ``"l0jax"`` or ``"l0jax.nn"``.

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


def api_page(module_name: str) -> str:
    """The reStructuredText of one module's reference page: one autosummary table per section."""
    title = TITLES[module_name]
    lines = [
        title,
        "=" * len(title),
        "",
        f".. automodule:: {module_name}",
        "   :no-members:",
        "",
        f".. currentmodule:: {module_name}",
        "",
    ]
    for section, names in api_sections(module_name):
        lines += [
            section,
            "-" * len(section),
            "",
            ".. autosummary::",
            "   :toctree: .",
            "   :nosignatures:",
            "",
        ]
        lines += [f"   {name}" for name in names]
        lines.append("")
    return "\n".join(lines)


def write_api_pages(srcdir: Path) -> list[Path]:
    """Writes ``api/_generated/<module>.rst`` for ``l0jax`` and ``l0jax.nn``, when they changed."""
    out = srcdir / "api" / GENERATED
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for module_name in SECTIONS:
        path = out / f"{module_name}.rst"
        text = api_page(module_name)
        if not path.exists() or path.read_text() != text:  # unchanged files keep Sphinx's cache valid
            path.write_text(text)
        written.append(path)
    return written


def missing_pages(outdir: Path) -> list[str]:
    """Public names whose HTML page is not in the built site ``outdir``."""
    missing = []
    for module_name in SECTIONS:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if not (outdir / "api" / GENERATED / f"{module_name}.{name}.html").exists():
                missing.append(f"{module_name}.{name}")
    return missing
