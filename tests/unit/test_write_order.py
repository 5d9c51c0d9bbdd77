"""A shard replica's writes follow its unanswered writes to the same faces, and only those."""

from __future__ import annotations

import asyncio

from index.write_order import WriteOrder


def test_a_write_follows_unanswered_writes_to_its_faces_only():
    async def run():
        loop = asyncio.get_running_loop()
        order = WriteOrder()
        add = loop.create_future()
        order.track("g", [1, 2, 3], add)
        assert order.before("g", [3, 9]) == {add}
        assert order.before("g", [9]) == set()
        assert order.before("other", [1]) == set()
        add.set_result(None)
        await asyncio.sleep(0)
        assert order.before("g", [1]) == set()

    asyncio.run(run())


def test_a_newer_write_to_a_face_replaces_the_older_as_what_follows_wait_for():
    async def run():
        loop = asyncio.get_running_loop()
        order = WriteOrder()
        add, remove = loop.create_future(), loop.create_future()
        order.track("g", [1, 2], add)
        order.track("g", [1], remove)
        assert order.before("g", [1]) == {remove}
        assert order.before("g", [2]) == {add}
        add.set_result(None)  # the older write answering leaves the newer one in place
        await asyncio.sleep(0)
        assert order.before("g", [1]) == {remove}

    asyncio.run(run())


def test_a_drop_follows_the_whole_gallery_and_later_writes_follow_the_drop():
    async def run():
        loop = asyncio.get_running_loop()
        order = WriteOrder()
        first, second, drop = loop.create_future(), loop.create_future(), loop.create_future()
        order.track("g", [1], first)
        order.track("g", [2], second)
        order.track("h", [1], loop.create_future())
        assert order.before("g", None) == {first, second}
        order.track("g", None, drop)
        assert order.before("g", [7]) == {drop}
        assert order.before("g", None) == {drop}
        drop.set_result(None)
        await asyncio.sleep(0)
        assert order.before("g", [1]) == set()
        assert len(order.before("h", [1])) == 1

    asyncio.run(run())
