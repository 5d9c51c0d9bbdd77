"""``WriteOrder``: one shard replica's unanswered writes, by the faces they touch.

Shard replicas run their calls in the order they arrive, not in the order a caller made them (the
actors allow out-of-order execution: Ray's in-order queue waits for every sequence number a caller
used, and one lost on the way, under load, stalled a replica's every later call for as long as calls
kept coming). So the router orders what must stay ordered itself: a write to a replica waits for the
replica's unanswered writes to the same faces (a delete must not overtake the add it follows, whose
vectors may still be in transit), and a gallery's drop for every unanswered write to that gallery.
Writes to other faces go out at once, so bulk adds still overlap.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

Call = asyncio.Future[Any]


class WriteOrder:
    def __init__(self) -> None:
        self._by_face: dict[str, dict[int, Call]] = {}
        self._drops: dict[str, Call] = {}

    def before(self, gallery: str, face_ids: Sequence[int] | None) -> set[Call]:
        """The unanswered writes a new write to these faces (None: the whole gallery) must follow."""
        faces = self._by_face.get(gallery, {})
        if face_ids is None:
            waits = set(faces.values())
        else:
            waits = {faces[face_id] for face_id in face_ids if face_id in faces}
        if gallery in self._drops:
            waits.add(self._drops[gallery])
        # A call made on another event loop (a caller that runs one per call) cannot be waited for here.
        loop = asyncio.get_running_loop()
        return {call for call in waits if not call.done() and call.get_loop() is loop}

    def track(self, gallery: str, face_ids: Sequence[int] | None, call: Call) -> None:
        """Record a write just sent, so that later writes to its faces follow it."""
        if face_ids is None:
            # The drop follows every write to the gallery before it, so later writes need follow only it.
            self._by_face.pop(gallery, None)
            self._drops[gallery] = call
        else:
            faces = self._by_face.setdefault(gallery, {})
            for face_id in face_ids:
                faces[face_id] = call
        call.add_done_callback(lambda done: self._forget(gallery, face_ids, done))

    def _forget(self, gallery: str, face_ids: Sequence[int] | None, call: Call) -> None:
        if face_ids is None:
            if self._drops.get(gallery) is call:
                del self._drops[gallery]
            return
        faces = self._by_face.get(gallery)
        if faces is None:
            return
        for face_id in face_ids:
            if faces.get(face_id) is call:
                del faces[face_id]
        if not faces:
            del self._by_face[gallery]
