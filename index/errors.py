"""The index's errors (the root, FacegridError, is facegrid.errors)."""

from __future__ import annotations

from facegrid.errors import FacegridError


class ShardUnavailable(FacegridError):
    """No replica of an index shard answers (all starting, rebuilding or lost)."""
