"""A package imported with one of its dependencies deferred: callables of the dependency work
and import it at their first call; a package that needs more of it at import still imports."""

from __future__ import annotations

import sys

import pytest

from vectorize.st_import import import_deferring


@pytest.fixture
def packages(tmp_path, monkeypatch):
    """``heavy.metrics`` (a dependency whose import is recorded) and two packages that import it."""
    (tmp_path / "heavy").mkdir()
    (tmp_path / "heavy" / "__init__.py").write_text("")
    (tmp_path / "heavy" / "metrics.py").write_text(
        "import sys\nsys.modules['heavy'].imported = True\n"
        "class Base:\n    pass\n"
        "def distance(a, b, *, scale=1):\n    return abs(a - b) * scale\n"
    )
    (tmp_path / "light_user").mkdir()
    (tmp_path / "light_user" / "__init__.py").write_text(
        "from heavy.metrics import distance\ndef far(a, b):\n    return distance(a, b, scale=10)\n"
    )
    (tmp_path / "subclassing_user").mkdir()
    (tmp_path / "subclassing_user" / "__init__.py").write_text(
        "from heavy.metrics import Base\nclass Child(Base):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [n for n in sys.modules if n.split(".")[0] in ("heavy", "light_user", "subclassing_user")]:
        del sys.modules[name]


def test_a_deferred_dependency_is_imported_at_the_first_call_of_one_of_its_names(packages):
    light_user = import_deferring("light_user", "heavy.metrics")
    assert "heavy" not in sys.modules and "heavy.metrics" not in sys.modules
    assert light_user.far(3, 1) == 20
    import heavy.metrics

    assert sys.modules["heavy"].imported and heavy.metrics.distance(1, 4) == 3  # the real module, from now on


def test_a_package_that_needs_more_than_callables_is_imported_the_plain_way(packages):
    subclassing_user = import_deferring("subclassing_user", "heavy.metrics")
    import heavy.metrics

    assert issubclass(subclassing_user.Child, heavy.metrics.Base)
    assert sys.modules["heavy.metrics"] is heavy.metrics and heavy.metrics.__file__
