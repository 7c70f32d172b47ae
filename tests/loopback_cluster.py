"""A Ray cluster of several nodes on 127.0.0.1: a head with the dashboard (the Jobs API) and
worker nodes that join it, each started by ``ray start --block`` in a process group of its own
so that one node can be killed whole (raylet, its workers, its object store) while the rest
go on. Every port is chosen free, so it runs beside the suite's own local Ray."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))

# A killed node is declared dead after a few failed health checks instead of ~15 s.
HEAD_ENV = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4"}


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Node:
    label: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """The whole node at once, as when its machine goes away."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)


@dataclass
class LoopbackCluster:
    """``root``: a short path (Ray's unix sockets live under it, 107 bytes at most).

    This process talks to the cluster over HTTP only (the dashboard's Jobs and state APIs):
    a Ray GCS client in it would end the whole process 60 s after the cluster is gone."""

    root: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    gcs_address: str = ""
    dashboard_url: str = ""

    def _start(self, label: str, num_cpus: int, args: list[str], extra_env: dict[str, str]) -> Node:
        agent, grpc, metrics, runtime_env, node_manager, object_manager = free_ports(6)
        command = [
            RAY, "start", "--block", "--disable-usage-stats",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}",
            f"--resources={json.dumps({label: 1})}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--node-manager-port={node_manager}",
            f"--object-manager-port={object_manager}",
            "--object-store-memory=200000000",
            *args,
        ]  # fmt: skip
        env = {
            **os.environ,
            **extra_env,
            # Ray's token authentication, with the token in ~/.ray/auth_token, which the head
            # writes when there is none; a worker joins only after the head is up.
            "RAY_AUTH_MODE": "token",
            # `python` in a job's entrypoint is this interpreter
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("RAY_ADDRESS", None)
        log = self.root / f"{label}.log"
        with log.open("w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        node = Node(label, process, log)
        self.nodes[label] = node
        return node

    def start_head(self, num_cpus: int) -> None:
        gcs, dashboard, client = free_ports(3)
        self.gcs_address = f"127.0.0.1:{gcs}"
        self.dashboard_url = f"http://127.0.0.1:{dashboard}"
        self.client_address = f"ray://127.0.0.1:{client}"
        self._start(
            "head",
            num_cpus,
            [
                "--head",
                f"--port={gcs}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                f"--ray-client-server-port={client}",
                f"--temp-dir={self.root / 'ray'}",
            ],
            HEAD_ENV,
        )

    def add_worker(self, label: str, num_cpus: int) -> Node:
        return self._start(label, num_cpus, [f"--address={self.gcs_address}"], {})

    def wait_until_up(self, timeout_s: float = 120) -> None:
        """Until every started node is alive in the cluster and the Jobs API answers."""
        from ray.job_submission import JobSubmissionClient
        from ray.util.state import list_nodes

        deadline = time.monotonic() + timeout_s
        while True:
            for node in self.nodes.values():
                if node.process.poll() is not None:
                    raise RuntimeError(f"node {node.label} exited: {node.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the loopback cluster did not come up in {timeout_s:.0f} s")
            try:
                alive = {
                    label
                    for n in list_nodes(address=self.dashboard_url, filters=[("state", "=", "ALIVE")], timeout=10)
                    for label in n.resources_total
                    if label in self.nodes
                }
                ready = alive == set(self.nodes)
                if ready:
                    JobSubmissionClient(self.dashboard_url)  # asks the Jobs API for its version
            except Exception:
                ready = False
            if ready:
                return
            time.sleep(1)

    def node_ids(self) -> dict[str, str]:
        """label -> Ray node id of every node that ever joined."""
        from ray.util.state import list_nodes

        return {
            label: n.node_id
            for n in list_nodes(address=self.dashboard_url, timeout=10)
            for label in n.resources_total
            if label in self.nodes
        }

    def stop(self) -> None:
        """Every node at once: a graceful stop drains each node for up to 30 s."""
        for node in self.nodes.values():
            node.kill()
