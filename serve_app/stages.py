"""How many of this ingress's requests have yet to call each model stage: the hint models batch by.

A Detector or Extractor batch that starts with a call waits for the calls still to come to its replica
(models.deployments.LoadAwareBatching). A request stops counting towards a stage when it sends its call
there (or knows it will not): calls already sent are queued or running at the replica, which counts those
itself, or on their way back, and waiting for those would be waiting in vain. Calls spread over a
deployment's replicas, so the count is divided by how many are running, as Serve's status says (read every
REPLICA_COUNT_EVERY_S in the background; 1 until first read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator

DETECTOR, EXTRACTOR = "detector", "extractor"
DEPLOYMENT_OF_STAGE = {DETECTOR: "Detector", EXTRACTOR: "Extractor"}
REPLICA_COUNT_EVERY_S = 10.0

log = logging.getLogger("facegrid")


def serve_replica_counts() -> dict[str, int]:
    """Running replicas of each model stage's deployment in this replica's Serve application."""
    from ray import serve
    from ray.serve.schema import ReplicaState

    app = serve.status().applications[serve.get_replica_context().app_name]
    return {
        stage: app.deployments[name].replica_states.get(ReplicaState.RUNNING, 1)
        for stage, name in DEPLOYMENT_OF_STAGE.items()
        if name in app.deployments
    }


class StageTraffic:
    def __init__(self, read_replica_counts: Callable[[], dict[str, int]] = serve_replica_counts):
        self.coming: Counter[str] = Counter()  # stage -> requests that have yet to call it
        self.replicas: dict[str, int] = {}  # stage -> running replicas of its deployment
        self._read_replica_counts = read_replica_counts
        self._counting: asyncio.Task | None = None

    @contextlib.contextmanager
    def journey(self, stages: tuple[str, ...]) -> Iterator["Journey"]:
        """One request's way through ``stages``; whatever it has not called when it ends stops counting."""
        if self._counting is None:
            self._counting = asyncio.get_running_loop().create_task(self._count_replicas())
        journey = Journey(self, set(stages))
        self.coming.update(stages)
        try:
            yield journey
        finally:
            self.coming.subtract(journey.ahead)

    def coming_to_a_replica(self, stage: str) -> int:
        return max(math.ceil(self.coming[stage] / max(self.replicas.get(stage, 1), 1)), 1)

    async def _count_replicas(self) -> None:
        while True:
            try:
                self.replicas.update(await asyncio.to_thread(self._read_replica_counts))
            except Exception as error:  # noqa: BLE001 - a hint only: keep the last counts, try again later
                log.debug("could not read the model replica counts: %s", error)
            await asyncio.sleep(REPLICA_COUNT_EVERY_S)


class Journey:
    def __init__(self, traffic: StageTraffic, ahead: set[str]):
        self.traffic, self.ahead = traffic, ahead

    def calling(self, stage: str) -> int:
        """Called as this request sends its call to ``stage``: the requests (this one included) that had yet
        to call it, per replica. From now on this request no longer counts there."""
        coming = self.traffic.coming_to_a_replica(stage)
        self.passed(stage)
        return coming

    def passed(self, stage: str) -> None:
        """This request will not call ``stage`` (any more)."""
        if stage in self.ahead:
            self.ahead.discard(stage)
            self.traffic.coming[stage] -= 1
