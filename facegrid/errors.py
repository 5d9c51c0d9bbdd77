"""The root of facegrid's errors, and what a lost Ray process looks like; every package builds on these.

    FacegridError                 (models/, index/, store/, serve_app/ derive their errors from it)
    ├── store.errors              GalleryNotFound, FaceExists, InvalidValue, StoreUnavailable, CacheUnavailable ...
    ├── index.errors              ShardUnavailable
    └── serve_app.errors          the request errors (BadParam, OverCapacity, ...)

None carries an HTTP status: ``serve_app.errors.ERROR_TABLE`` maps each to the spec's code, in one place.
They are plain exceptions with picklable arguments, because they cross Ray actor boundaries.
"""

from __future__ import annotations


class FacegridError(Exception):
    """Base of the domain errors; ``str(error)`` is the human-readable description."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def actor_lost_errors() -> tuple[type[BaseException], ...]:
    """What a call to a Ray actor (a shard replica, the cache actor, a Serve replica) raises when the
    process that should answer has died or cannot be reached (ActorDiedError and ActorUnavailableError are
    RayActorError's subclasses). Each caller adds what else it treats as lost: a timeout, a task error."""
    from ray import exceptions

    return (exceptions.RayActorError,)
