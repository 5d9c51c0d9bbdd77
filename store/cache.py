"""The ``DetectionCache``: detections kept for a while under a random id, so that a face can be added to
a gallery (``detection:<id>``) or compared without sending the photo again.

The embedded implementation is an LRU with a TTL and a size bound (``LocalDetectionCache``), served to
every ingress replica from one Ray actor (``ActorDetectionCache`` is the client). The memcached
implementation plugs in behind the same protocol.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from typing import Protocol

from .errors import CacheUnavailable

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"


def new_detection_id() -> str:
    """20 characters of lowercase base32: 100 random bits, URL-safe, like FindFace's ids."""
    number = secrets.randbits(100)
    return "".join(_ID_ALPHABET[(number >> (5 * i)) & 31] for i in range(20))


class DetectionCache(Protocol):
    async def put_many(self, records: dict[str, dict], ttl_s: float) -> None:
        """Store every record; confirmed when the call returns. Raises CacheUnavailable."""
    async def get(self, detection_id: str) -> dict | None:
        """The record, or None when unknown or expired. Raises CacheUnavailable."""
    async def ping(self) -> bool: ...


class LocalDetectionCache:
    """LRU + TTL in one process. Records are plain dicts (picklable, JSON-friendly)."""

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, dict]] = OrderedDict()

    def put_many(self, records: dict[str, dict], ttl_s: float) -> None:
        expires = time.monotonic() + ttl_s
        for detection_id, record in records.items():
            self._entries[detection_id] = (expires, record)
            self._entries.move_to_end(detection_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, detection_id: str) -> dict | None:
        entry = self._entries.get(detection_id)
        if entry is None:
            return None
        expires, record = entry
        if expires <= time.monotonic():
            del self._entries[detection_id]
            return None
        self._entries.move_to_end(detection_id)
        return record

    def size(self) -> int:
        return len(self._entries)

    def ping(self) -> bool:
        return True


class ActorDetectionCache:
    """Client of the embedded cache actor; what every ingress replica holds.

    The actor is named, so every replica finds the same one. If it is lost for good (killed, its node
    gone), the call that notices answers CacheUnavailable and the next call starts a new, empty one.
    """

    ACTOR_NAME = "facegrid-detection-cache"

    def __init__(self, max_entries: int, *, detached: bool = False, name: str | None = None):
        import ray.exceptions

        self.max_entries, self.detached, self.name = max_entries, detached, name or self.ACTOR_NAME
        self._errors = (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError)
        self.actor = None
        self._connect()

    def _connect(self):
        import ray

        self.actor = ray.remote(LocalDetectionCache).options(
            name=self.name, get_if_exists=True, lifetime="detached" if self.detached else None,
            max_restarts=-1, max_task_retries=3, num_cpus=0,
        ).remote(self.max_entries)
        return self.actor

    async def _call(self, method: str, *args):
        actor = self.actor or self._connect()
        try:
            return await getattr(actor, method).remote(*args)
        except self._errors as error:
            self.actor = None
            raise CacheUnavailable(f"the detection cache is unavailable: {error}") from None

    async def put_many(self, records: dict[str, dict], ttl_s: float) -> None:
        await self._call("put_many", records, ttl_s)

    async def get(self, detection_id: str) -> dict | None:
        return await self._call("get", detection_id)

    async def ping(self) -> bool:
        try:
            return await self._call("ping")
        except CacheUnavailable:
            return False
