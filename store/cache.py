"""The ``DetectionCache``: detections kept for a while under a random id, so that a face can be added to
a gallery (``detection:<id>``) or compared without sending the photo again.

The embedded implementation is an LRU with a TTL and a size bound (``LocalDetectionCache``), served to
every ingress replica from one Ray actor (``ActorDetectionCache`` is the client). The memcached
implementation plugs in behind the same protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from facegrid.errors import actor_lost_errors

from .errors import CacheUnavailable

logger = logging.getLogger(__name__)

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
_ID_LENGTH = 20
_ID_CHARACTERS = frozenset(_ID_ALPHABET)


def new_detection_id() -> str:
    """20 characters of lowercase base32: 100 random bits, URL-safe, like FindFace's ids."""
    number = secrets.randbits(100)
    return "".join(_ID_ALPHABET[(number >> (5 * i)) & 31] for i in range(_ID_LENGTH))


async def find_detection(cache: "DetectionCache", detection_id: str) -> dict[str, Any] | None:
    """The cached detection, or None. An id of another shape than ``new_detection_id`` makes is never
    looked up: it cannot exist, and a cache server must not see a client's whitespace, control
    characters or kilobytes as a key (memcached answers those as errors, which read as an outage)."""
    if len(detection_id) != _ID_LENGTH or not _ID_CHARACTERS.issuperset(detection_id):
        return None
    return await cache.get(detection_id)


class DetectionCache(Protocol):
    async def put_many(self, records: dict[str, dict[str, Any]], ttl_s: float) -> None:
        """Store every record; confirmed when the call returns. Raises CacheUnavailable."""

    async def get(self, detection_id: str) -> dict[str, Any] | None:
        """The record, or None when unknown or expired. Raises CacheUnavailable."""

    async def ping(self) -> bool: ...


class LocalDetectionCache:
    """LRU + TTL in one process. Records are plain dicts (picklable, JSON-friendly)."""

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def put_many(self, records: dict[str, dict[str, Any]], ttl_s: float) -> None:
        expires = time.monotonic() + ttl_s
        for detection_id, record in records.items():
            self._entries[detection_id] = (expires, record)
            self._entries.move_to_end(detection_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, detection_id: str) -> dict[str, Any] | None:
        entry = self._entries.get(detection_id)
        if entry is None:
            return None
        expires, record = entry
        if expires <= time.monotonic():
            del self._entries[detection_id]
            return None
        self._entries.move_to_end(detection_id)
        return record

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
        self._errors: tuple[type[BaseException], ...] = (*actor_lost_errors(), ray.exceptions.GetTimeoutError)
        self.actor: Any = None  # the actor's handle
        self._connect()

    def _connect(self) -> Any:
        import ray

        self.actor = (
            ray.remote(LocalDetectionCache)
            .options(
                name=self.name,
                get_if_exists=True,
                lifetime="detached" if self.detached else None,
                max_restarts=-1,
                max_task_retries=3,
                # A caller awaits each put before it hands out the detection ids, so no order is needed;
                # Ray's in-order queue stalls every later call from a caller one of whose calls was lost.
                allow_out_of_order_execution=True,
                num_cpus=0,
            )
            .remote(self.max_entries)
        )
        return self.actor

    async def _call(self, method: str, *args: Any) -> Any:
        actor = self.actor or self._connect()
        try:
            return await getattr(actor, method).remote(*args)
        except self._errors as error:
            self.actor = None
            raise CacheUnavailable(f"the detection cache is unavailable: {error}") from None

    async def put_many(self, records: dict[str, dict[str, Any]], ttl_s: float) -> None:
        await self._call("put_many", records, ttl_s)

    async def get(self, detection_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._call("get", detection_id)
        return found

    async def ping(self) -> bool:
        try:
            return bool(await self._call("ping"))
        except CacheUnavailable:
            return False


class _JsonSerde:
    """Values go to memcached as JSON: a shared cache should never feed pickle to a process."""

    def serialize(self, key: str, value: Any) -> tuple[bytes, int]:
        return json.dumps(value, separators=(",", ":")).encode(), 1

    def deserialize(self, key: str, value: bytes, flags: int) -> Any:
        return json.loads(value)


class MemcachedDetectionCache:
    """Detections in memcached (one or several servers, keys spread by pymemcache's HashClient).

    Writes wait for the servers' replies (no ``noreply``), so a detection is cached when the call
    returns; a record larger than memcached's item limit is refused rather than silently dropped.
    A server that fails is retried after ``dead_timeout`` seconds, so recovery needs no restart.
    """

    KEY_PREFIX = "facegrid:detection:"

    def __init__(self, servers: list[str], timeout_s: float = 1.0, max_item_bytes: int = 1_000_000):
        from pymemcache.client.hash import HashClient

        self.servers, self.timeout_s, self.max_item_bytes = servers, timeout_s, max_item_bytes
        addresses = [(host, int(port)) for host, _, port in (server.rpartition(":") for server in servers)]
        self.client = HashClient(
            addresses,
            serde=_JsonSerde(),
            connect_timeout=timeout_s,
            timeout=timeout_s,
            ignore_exc=False,
            retry_attempts=1,
            retry_timeout=0,
            dead_timeout=1,
            use_pooling=True,
            max_pool_size=16,
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.servers, self.timeout_s, self.max_item_bytes)

    def _guarded(self, work: Callable[[], Any]) -> Any:
        from pymemcache.exceptions import MemcacheError

        try:
            return work()
        except (MemcacheError, OSError) as error:
            # The client hears only that the cache is down; the driver's words, which may quote keys,
            # go to the operators' log.
            logger.warning("memcached failed: %s: %s", type(error).__name__, error)
            raise CacheUnavailable(f"the detection cache is unavailable ({type(error).__name__})") from None

    def _put(self, records: dict[str, dict[str, Any]], ttl_s: float) -> None:
        for detection_id, record in records.items():
            if len(json.dumps(record)) > self.max_item_bytes:
                raise CacheUnavailable(f"detection {detection_id} is larger than memcached's item limit")
        keyed = {self.KEY_PREFIX + key: value for key, value in records.items()}
        failed = self.client.set_many(keyed, expire=max(1, int(ttl_s)), noreply=False)
        if failed:
            raise CacheUnavailable(f"memcached did not store {len(failed)} of {len(keyed)} detections")

    async def put_many(self, records: dict[str, dict[str, Any]], ttl_s: float) -> None:
        await asyncio.to_thread(self._guarded, lambda: self._put(records, ttl_s))

    async def get(self, detection_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await asyncio.to_thread(
            self._guarded, lambda: self.client.get(self.KEY_PREFIX + detection_id)
        )
        return found

    async def ping(self) -> bool:
        try:
            await asyncio.to_thread(self._guarded, lambda: self.client.get(self.KEY_PREFIX + "ping"))
            return True
        except CacheUnavailable:
            return False
