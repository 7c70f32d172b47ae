"""cluster.yaml against the schema that ships inside the installed ``ray`` package."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from tests.corpus import ROOT

SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA.read_text())


@pytest.fixture
def config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema(schema, config):
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    instance_types = {t["node_config"]["InstanceType"] for t in workers.values()}
    assert any(i.startswith(("g4", "g5", "g6", "p3", "p4", "p5")) for i in instance_types), instance_types
    assert any(not i.startswith(("g", "p")) for i in instance_types), instance_types
    for node_type in workers.values():
        assert node_type["min_workers"] == 0
        assert node_type["max_workers"] > 0
    assert config["idle_timeout_minutes"] > 0
    assert any("-e ~/vectorize" in c for c in config["setup_commands"])
    assert "." in config["file_mounts"].values()


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c.pop("provider"),
        lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"),
        lambda c: c["available_node_types"]["gpu_worker"].update(resources={"GPU": 0.5}),
        lambda c: c["available_node_types"]["cpu_worker"].update(max_workers="eight"),
        lambda c: c["available_node_types"]["cpu_worker"].update(min_worker=0),
        lambda c: c.update(idle_timeout_minutes="five"),
    ],
    ids=["no-provider", "no-node-config", "fractional-resource", "max-workers-text", "misspelt-key", "timeout-text"],
)
def test_broken_copies_of_cluster_yaml_fail_validation(schema, config, breakage):
    broken = copy.deepcopy(config)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_every_node_starts_ray_with_serves_throughput_settings(config):
    from serve.launch import LOCAL_ONLY_SETTINGS, SERVE_ENVIRONMENT

    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = next(c for c in commands if "ray start" in c)
        for key, value in SERVE_ENVIRONMENT.items():
            if key not in LOCAL_ONLY_SETTINGS:
                assert f"{key}={value}" in start, key
