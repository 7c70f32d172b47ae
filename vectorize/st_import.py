"""Importing ``sentence_transformers`` without scikit-learn.

At its import, ``sentence_transformers`` imports ``sklearn.metrics`` (and with it scipy) for one
similarity helper of its utilities (sparse Manhattan); encoding never calls it, yet every
embedding actor, Serve replica and CLI search would import it before its first vector. While
the package imports, ``sklearn.metrics`` is a stand-in whose names import the real module when first called; the
stand-in is then taken out of ``sys.modules``, so any later ``import sklearn.metrics`` is the
real one. Should a version of the package need more of scikit-learn at import than callables,
it is imported again the plain way.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def import_sentence_transformers() -> types.ModuleType:
    return import_deferring("sentence_transformers", "sklearn.metrics")


def import_deferring(package: str, deferred: str) -> types.ModuleType:
    """``package`` imported with ``deferred`` a stand-in until one of its names is called."""
    if package in sys.modules or deferred in sys.modules:
        return importlib.import_module(package)
    try:
        return _import_beside_stand_in(package, deferred)
    except Exception:
        logger.debug("%s did not import beside a stand-in for %s; importing both", package, deferred, exc_info=True)
        for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
            del sys.modules[name]
        return importlib.import_module(package)


def _import_beside_stand_in(package: str, deferred: str) -> types.ModuleType:
    stand_in = _stand_in(deferred)
    sys.modules[deferred] = stand_in
    try:
        return importlib.import_module(package)
    finally:
        if sys.modules.get(deferred) is stand_in:
            del sys.modules[deferred]


def _stand_in(deferred: str) -> types.ModuleType:
    module = types.ModuleType(deferred, "a stand-in: each name imports the real module when called")

    def name_of_real(name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module(deferred), name)(*args, **kwargs)

        call.__name__ = call.__qualname__ = name
        return call

    module.__getattr__ = name_of_real  # type: ignore[method-assign]
    return module
