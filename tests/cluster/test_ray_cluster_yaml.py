"""ray_cluster.yaml is valid for `ray up`: Ray's own schema check and provider bootstrap (no SSH)."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_cluster_yaml_passes_rays_schema_and_bootstrap():
    from ray.autoscaler._private.commands import _bootstrap_config
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    prepared = prepare_config(config)
    validate_config(prepared)
    bootstrapped = _bootstrap_config(prepared, no_config_cache=True)
    assert bootstrapped["provider"]["head_ip"] == "10.0.0.10"
    head_start = " ".join(bootstrapped["head_start_ray_commands"])
    assert "rayborg serve" in head_start and "rayborg-host=" in head_start
    assert "rayborg-host=" in " ".join(bootstrapped["worker_start_ray_commands"])


def test_schema_check_rejects_a_broken_file():
    import pytest
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    config["worker_start_commands"] = config.pop("worker_start_ray_commands")
    with pytest.raises(Exception, match="Additional properties"):
        validate_config(prepare_config(config))
