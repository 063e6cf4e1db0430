"""Benchmarks: ``python -m lmcourse bench NAME [ARGS]`` runs ``lmcourse/bench/NAME.py``.

Each benchmark is one module here with a ``main(argv: list[str] | None) -> int``.
Adding one is adding its file: :func:`available` finds every module of this package.
Names are written with hyphens on the command line (``kv-cache`` runs ``kv_cache.py``).
"""

from __future__ import annotations

import importlib
import pkgutil


def available() -> list[str]:
    """The names of the benchmarks (the modules of this package), sorted."""
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def run(name: str, argv: list[str] | None = None) -> int:
    """Run benchmark ``name`` with command-line arguments ``argv``; returns its exit code."""
    if name not in available():
        raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(available()) or 'none'}")
    module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
    return int(module.main(argv) or 0)
