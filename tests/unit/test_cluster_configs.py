"""The cluster and Serve configs parse, match Ray's own schemas, and build the facegrid application."""

from __future__ import annotations

import json

import yaml
from ray.serve.schema import ServeDeploySchema

from index.config import IndexConfig
from serve_app.app import app_builder, deployment_options
from serve_app.config import load_settings
from serve_app.services import admission_limit
from tests.helpers import REPO


def _check_serve_config(config: dict) -> None:
    schema = ServeDeploySchema.parse_obj(config)  # Ray's own schema (pydantic v1 API)
    (application,) = schema.applications
    assert application.import_path == "serve_app.app:app_builder"
    # One home for each option: the deployments' options come from the settings in args; a deployments
    # entry may only carry the Ingress's index tuning, which Serve applies in place.
    for deployment in application.deployments:
        assert deployment.name == "Ingress" and set(deployment.dict(exclude_unset=True)) <= {"name", "user_config"}
        tuning = deployment.user_config or {}
        assert set(tuning) == {"index"} and set(tuning["index"]) <= IndexConfig.TUNABLE
    assert type(app_builder(application.args)).__name__ == "Application"
    serve = load_settings(**application.args).serve
    for section in (serve.detector, serve.extractor):
        options = deployment_options(section, gpus_present=True, batching=True)
        assert options["max_queued_requests"] > 0  # bounded: the source of 429 OVER_CAPACITY
        autoscaling = options["autoscaling_config"]
        assert 1 <= autoscaling["min_replicas"] < autoscaling["max_replicas"]
    # Each Ingress replica admits what the Detector can hold at its largest, as configured here.
    assert (
        admission_limit(serve.detector)
        == serve.detector.max_replicas * (serve.detector.max_ongoing_requests + serve.detector.max_queued_requests)
        > 80
    )


def test_serve_config_validates_and_builds_the_app():
    _check_serve_config(yaml.safe_load((REPO / "cluster" / "serve-config.yaml").read_text()))


def test_kuberay_rayservice_embeds_a_valid_serve_config():
    manifest = yaml.safe_load((REPO / "cluster" / "kuberay" / "rayservice.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    _check_serve_config(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    groups = {g["groupName"]: g for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1" and groups["gpu"]["maxReplicas"] >= groups["gpu"]["minReplicas"]
    index = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]["args"]["index"]
    offered = json.loads(yaml.safe_load(groups["index"]["rayStartParams"]["resources"]))
    assert set(index["shard_resources"]) <= set(offered)
    assert groups["index"]["minReplicas"] >= index["replicas_per_shard"]


def test_cluster_launcher_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "ray-config.yaml").read_text())
    validate_config(prepare_config(config))  # what `ray up` does before launching anything
    types = config["available_node_types"]
    assert types["gpu_worker"]["resources"] == {"GPU": 1} and types[config["head_node_type"]]
    assert all(types[t]["min_workers"] <= types[t]["max_workers"] for t in ("index_worker", "gpu_worker"))
    # Shards ask for the resources the index nodes offer, and there are enough index nodes to keep a
    # shard's replicas apart.
    index = yaml.safe_load((REPO / "cluster" / "serve-config.yaml").read_text())["applications"][0]["args"]["index"]
    offered = types["index_worker"]["resources"]
    assert set(index["shard_resources"]) <= set(offered)
    assert types["index_worker"]["min_workers"] >= index["replicas_per_shard"]


def test_model_replicas_take_a_gpu_share_only_where_the_cluster_has_gpus():
    serve = load_settings().serve

    def gpus(section, gpus_present: bool) -> float:
        return deployment_options(section, gpus_present, batching=True)["ray_actor_options"]["num_gpus"]

    assert gpus(serve.detector, True) == gpus(serve.extractor, True) == 0.5  # the two share one GPU
    assert gpus(serve.ingress, True) == 0
    assert gpus(serve.detector, False) == gpus(serve.extractor, False) == 0
