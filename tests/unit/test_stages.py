"""The batching hint: how many requests have yet to call each model stage (serve_app/stages.py)."""

from __future__ import annotations

import asyncio

from serve_app.stages import DETECTOR, EXTRACTOR, StageTraffic


def test_a_request_counts_towards_a_stage_until_it_calls_it_or_ends():
    async def scenario():
        traffic = StageTraffic(read_replica_counts=lambda: {DETECTOR: 1, EXTRACTOR: 1})
        with traffic.journey((DETECTOR, EXTRACTOR)) as first, traffic.journey((DETECTOR, EXTRACTOR)) as second:
            with traffic.journey((DETECTOR,)) as third:  # detect without facen: no Extractor call
                assert first.calling(DETECTOR) == 3  # itself and the two still decoding
                assert third.calling(DETECTOR) == 2
            assert second.calling(DETECTOR) == 1  # the others' calls went out already
            first.passed(DETECTOR)  # no second count for a stage called
            assert first.calling(EXTRACTOR) == 2
            second.passed(EXTRACTOR)  # no faces found: no Extractor call
        assert traffic.coming[DETECTOR] == traffic.coming[EXTRACTOR] == 0
        with traffic.journey((DETECTOR, EXTRACTOR)):
            pass  # failed before its calls: counts nowhere
        assert traffic.coming[DETECTOR] == traffic.coming[EXTRACTOR] == 0

    asyncio.run(scenario())


def test_the_count_is_shared_among_a_deployments_running_replicas():
    async def scenario():
        traffic = StageTraffic(read_replica_counts=lambda: {DETECTOR: 4})
        journeys = [traffic.journey((DETECTOR,)) for _ in range(10)]
        entered = [journey.__enter__() for journey in journeys]
        await asyncio.sleep(0.05)  # the background read of the replica counts
        assert entered[0].calling(DETECTOR) == 3  # ten requests over four replicas: three at most
        for journey in journeys:
            journey.__exit__(None, None, None)

    asyncio.run(scenario())


def test_a_failing_replica_count_leaves_the_hint_undivided():
    def unreadable() -> dict[str, int]:
        raise RuntimeError("the Serve controller is unreachable")

    async def scenario():
        traffic = StageTraffic(read_replica_counts=unreadable)
        with traffic.journey((DETECTOR,)), traffic.journey((DETECTOR,)) as second:
            await asyncio.sleep(0.05)
            assert second.calling(DETECTOR) == 2

    asyncio.run(scenario())
