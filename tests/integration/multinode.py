"""A facegrid service on a Ray cluster of several nodes on this one machine, driven over stdin/stdout.

The test process already holds a Ray of its own, and a process joins one Ray cluster only, so the
cluster lives in this child process: ``python -m tests.integration.multinode SETTINGS_JSON``. It starts a head node
(2 CPUs: Serve and the models) and worker nodes with no CPUs and a ``facegrid_index`` resource (the
shard replicas, which ask for it), deploys the app with the given settings, prints one JSON line
``{"ready": ..., "workers": [...]}`` and answers one JSON line per command line (answer lines start with
``ANSWER``: Ray writes to this stdout too):
``{"cmd": "placement"}``, ``{"cmd": "replicas", "deployment": NAME}``,
``{"cmd": "remove_node", "node": ID}``, ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import json
import logging
import os
import sys

ANSWER = "@answer "
WORKERS = 3
INDEX_RESOURCE = "facegrid_index"
# Ray's defaults take about 15 s to declare a lost node dead; the test states its own, shorter bound.
FAST_HEALTH_CHECKS = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 4,
    "health_check_initial_delay_ms": 0,
}


def placement(settings) -> list[list[str]]:
    """The node of every replica of every shard, shard by shard."""
    import ray

    from index.shard import named_replicas, replica_name

    running = named_replicas("facegrid")
    index = settings.index
    names = [
        [running[replica_name("facegrid", shard, replica)] for replica in range(index.replicas_per_shard)]
        for shard in range(index.num_shards)
    ]
    actors = [[ray.get_actor(name, namespace=namespace) for name, namespace in shard] for shard in names]
    nodes = []
    for replicas in actors:
        states: list[dict[str, str]] = ray.get([actor.ready.remote() for actor in replicas], timeout=60)
        nodes.append([state["node"] for state in states])
    return nodes


def running_replicas(deployment: str) -> int:
    from ray import serve
    from ray.serve.schema import ReplicaState

    states = serve.status().applications["facegrid"].deployments[deployment].replica_states
    return int(states.get(ReplicaState.RUNNING, 0))


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    from serve_app.app import ray_environment, run, stop_service, wait_until_ready
    from serve_app.config import load_settings

    settings = load_settings(**json.loads(sys.argv[1]))
    os.environ.update(ray_environment(settings))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "_system_config": FAST_HEALTH_CHECKS})
    workers = {}
    for _ in range(WORKERS):
        node = cluster.add_node(num_cpus=0, resources={INDEX_RESOURCE: 2})
        workers[node.node_id] = node
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="facegrid", logging_level=logging.ERROR, log_to_driver=False)
    try:
        run(settings)
        ready = wait_until_ready(f"http://127.0.0.1:{settings.port}", 240)
        print(ANSWER + json.dumps({"ready": ready, "workers": sorted(workers)}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] == "quit":
                break
            try:
                answer: dict[str, object]
                if command["cmd"] == "placement":
                    answer = {"placement": placement(settings)}
                elif command["cmd"] == "replicas":
                    answer = {"running": running_replicas(command["deployment"])}
                else:
                    cluster.remove_node(workers.pop(command["node"]), allow_graceful=False)
                    answer = {"removed": command["node"]}
            except Exception as error:  # noqa: BLE001 - the test reads the error and fails with it
                answer = {"error": f"{type(error).__name__}: {error}"}
            print(ANSWER + json.dumps(answer), flush=True)
    finally:
        stop_service()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
