"""The batching hint: how many requests are still on their way to each model stage (serve_app/stages.py)."""

from __future__ import annotations

import asyncio

from serve_app.stages import DETECTOR, EXTRACTOR, StageTraffic


def test_requests_count_towards_a_stage_until_they_pass_it_or_end():
    async def scenario():
        traffic = StageTraffic(read_replica_counts=lambda: {DETECTOR: 1, EXTRACTOR: 1})
        with traffic.journey((DETECTOR, EXTRACTOR)) as first, traffic.journey((DETECTOR, EXTRACTOR)) as second:
            with traffic.journey((DETECTOR,)) as third:          # detect without facen: no Extractor call
                assert first.coming_to(DETECTOR) == 3 and first.coming_to(EXTRACTOR) == 2
                third.passed(DETECTOR)
            first.passed(DETECTOR)
            first.passed(DETECTOR)                               # passing twice counts once
            assert second.coming_to(DETECTOR) == 1 and second.coming_to(EXTRACTOR) == 2
            first.passed(EXTRACTOR)
            assert second.coming_to(EXTRACTOR) == 1
        # The second request failed before its model calls: it no longer counts anywhere.
        assert traffic.coming[DETECTOR] == traffic.coming[EXTRACTOR] == 0
        with traffic.journey((DETECTOR,)) as alone:
            assert alone.coming_to(DETECTOR) == 1

    asyncio.run(scenario())


def test_the_count_is_shared_among_a_deployments_running_replicas():
    async def scenario():
        traffic = StageTraffic(read_replica_counts=lambda: {DETECTOR: 4})
        journeys = [traffic.journey((DETECTOR,)) for _ in range(10)]
        entered = [journey.__enter__() for journey in journeys]
        await asyncio.sleep(0.05)                                # the background read of the replica counts
        assert entered[0].coming_to(DETECTOR) == 3               # ten calls over four replicas: three at most
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
            assert second.coming_to(DETECTOR) == 2

    asyncio.run(scenario())
