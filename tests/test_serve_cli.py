"""`vectorize serve` as a user starts it: its own Ray, Serve's throughput settings with HAProxy
on the port, the real openai SDK against it, and Ctrl-C leaving nothing listening."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from serve.launch import free_port
from tests.corpus import commit_rows
from tests.helpers import cli_error_lines, cosine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "sk-cli-test"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _deaf_to_ctrl_c() -> None:
    """The disposition a parent may leave its children (a test runner's thread, a shell's
    background job): SIGINT ignored and blocked. The server must stop on Ctrl-C all the same."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _serve(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Its output goes to ``log``: a pipe nobody reads while it runs could fill and block it."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "vectorize.cli", "serve", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=_deaf_to_ctrl_c,
        )


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vectorize serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    process.kill()
    pytest.fail(f"vectorize serve did not answer within {seconds} s:\n{log.read_text()}")


@pytest.mark.slow
def test_vectorize_serve_answers_the_sdk_and_stops_cleanly(tiny_model, pg_dsn, tmp_path):
    from openai import OpenAI

    from vectorize.models import read_identity
    from vectorize.providers.local import SentenceTransformerModel

    # the job's own vectors for served texts are test_serve's concern; here: the model's, in this process
    texts = [row["text"] for row in commit_rows(3)]
    model = SentenceTransformerModel(read_identity(tiny_model), tiny_model, device="cpu")
    expected = dict(zip(texts, model.embed(texts).vectors, strict=True))

    port = free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"VECTORIZE_API_KEYS": KEY}
    log = tmp_path / "serve.log"
    process = _serve(
        "--port", str(port), "--model", tiny_model, "--dsn", pg_dsn, "--cpus-per-replica", "1", env=env, log=log
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        assert httpx.get(f"{url}/healthz").json()["database"] is True
        sdk = OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        answer = sdk.embeddings.create(input=texts, model=sdk.models.list().data[0].id)
        for item, text in zip(answer.data, texts, strict=True):
            assert cosine(np.asarray(item.embedding), expected[text]) >= 0.9999
        assert httpx.post(f"{url}/v1/embeddings", json={"input": "x"}).status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"vectorize serve did not stop within 90 s of Ctrl-C:\n{log.read_text()}")
    output = log.read_text()
    assert process.returncode == 0, output
    printed = [line for line in output.splitlines() if line.strip()]
    assert printed and all(line.startswith("vectorize: ") for line in printed), output  # no Ray or Serve lines
    time.sleep(1)
    assert not _listening(port), "something still listens on the port after Ctrl-C (HAProxy left behind?)"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--model", "no-such-model"], "no-such-model"),
        (["--replicas", "0"], "--replicas must be at least 1"),
    ],
)
def test_bad_serve_arguments_stop_before_ray_with_one_line(args, says, pg_dsn):
    result = subprocess.run(
        [sys.executable, "-m", "vectorize.cli", "serve", "--dsn", pg_dsn, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vectorize: error:") and says in lines[0], result.stderr


def test_a_port_in_use_is_one_line_before_ray(pg_dsn):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines = cli_error_lines("serve", "--dsn", pg_dsn, "--port", str(port))
    assert lines == [
        f"vectorize: error: cannot serve on 127.0.0.1:{port}: address already in use; choose another --port"
    ]
