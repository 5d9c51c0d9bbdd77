"""Face filters of the spec's list/search (``id:gte/lte/in``, ``meta:in/gte/lte/subset``), evaluated two ways:
``matches`` on one face (the reference semantics) and ``mask`` on a shard's columns (vectorised).

Values arrive from query strings as text, and meta has no schema by default, so a given value matches a
stored integer when it reads as that integer, and a stored string when it is that string. Ranges compare
integers numerically and strings lexicographically; a face whose field is missing or of the other type
does not pass. ``in`` on a list field passes when any element is one of the values; ``subset`` passes
when every given value is in the stored list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 10)
        except ValueError:
            return None
    return None


def _equal(stored: object, given: object) -> bool:
    if isinstance(stored, bool):
        return False
    if isinstance(stored, int):
        return _as_int(given) == stored
    return isinstance(stored, str) and str(given) == stored


def _compare(stored: object, given: object) -> int | None:
    """-1, 0 or 1 for stored vs given; None when they are not comparable."""
    if isinstance(stored, int) and not isinstance(stored, bool):
        number = _as_int(given)
        return None if number is None else (stored > number) - (stored < number)
    if isinstance(stored, str):
        text = str(given)
        return (stored > text) - (stored < text)
    return None


@dataclass(frozen=True)
class FaceFilter:
    id_gte: int | None = None
    id_lte: int | None = None
    id_in: tuple[int, ...] | None = None
    meta_in: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    meta_gte: tuple[tuple[str, object], ...] = ()
    meta_lte: tuple[tuple[str, object], ...] = ()
    meta_subset: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def is_empty(self) -> bool:
        return (
            self.id_gte is None
            and self.id_lte is None
            and self.id_in is None
            and not self.meta_in
            and not self.meta_gte
            and not self.meta_lte
            and not self.meta_subset
        )

    def matches(self, face_id: int, meta: dict[str, Any]) -> bool:
        if self.id_gte is not None and face_id < self.id_gte:
            return False
        if self.id_lte is not None and face_id > self.id_lte:
            return False
        if self.id_in is not None and face_id not in self.id_in:
            return False
        for name, values in self.meta_in:
            stored = meta.get(name)
            items = stored if isinstance(stored, list) else [stored]
            if not any(_equal(item, value) for item in items for value in values):
                return False
        for name, bound in self.meta_gte:
            order = _compare(meta.get(name), bound)
            if order is None or order < 0:
                return False
        for name, bound in self.meta_lte:
            order = _compare(meta.get(name), bound)
            if order is None or order > 0:
                return False
        for name, values in self.meta_subset:
            stored = meta.get(name)
            if not isinstance(stored, list) or not all(any(_equal(item, v) for item in stored) for v in values):
                return False
        return True

    def mask(self, ids: np.ndarray, meta_column: Callable[[str], "MetaColumn"]) -> np.ndarray:
        """Which of ``ids`` (uint64, one per slot) pass; meta comes column by column."""
        passed = np.ones(len(ids), dtype=bool)
        if self.id_gte is not None:
            passed &= ids >= np.uint64(self.id_gte)
        if self.id_lte is not None:
            passed &= ids <= np.uint64(self.id_lte)
        if self.id_in is not None:
            passed &= np.isin(ids, np.array(self.id_in, dtype=np.uint64))
        for name, values in self.meta_in:
            passed &= meta_column(name).isin(values, len(ids))
        for name, bound in self.meta_gte:
            passed &= meta_column(name).compare(bound, len(ids), lower=True)
        for name, bound in self.meta_lte:
            passed &= meta_column(name).compare(bound, len(ids), lower=False)
        for name, values in self.meta_subset:
            passed &= meta_column(name).contains_all(values, len(ids))
        return passed


class MetaColumn:
    """One meta field across a shard's slots, typed for vectorised filtering.

    Integers go to an int64 array; strings to an object array; lists to an object array of frozensets.
    Each kind has a presence mask. Integers beyond int64 cannot be range-filtered (they never pass).
    """

    def __init__(self, capacity: int = 0):
        self.ints = np.zeros(capacity, np.int64)
        self.has_int = np.zeros(capacity, bool)
        self.strs = np.empty(capacity, object)
        self.has_str = np.zeros(capacity, bool)
        self.lists = np.empty(capacity, object)
        self.has_list = np.zeros(capacity, bool)

    def grow(self, capacity: int) -> None:
        extra = capacity - len(self.ints)
        if extra <= 0:
            return
        self.ints = np.concatenate([self.ints, np.zeros(extra, np.int64)])
        self.has_int = np.concatenate([self.has_int, np.zeros(extra, bool)])
        self.strs = np.concatenate([self.strs, np.empty(extra, object)])
        self.has_str = np.concatenate([self.has_str, np.zeros(extra, bool)])
        self.lists = np.concatenate([self.lists, np.empty(extra, object)])
        self.has_list = np.concatenate([self.has_list, np.zeros(extra, bool)])

    def set(self, slot: int, value: object) -> None:
        self.has_int[slot] = self.has_str[slot] = self.has_list[slot] = False
        self.strs[slot] = self.lists[slot] = None
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int) and -(2**63) <= value < 2**63:
            self.ints[slot], self.has_int[slot] = value, True
        elif isinstance(value, str):
            self.strs[slot], self.has_str[slot] = value, True
        elif isinstance(value, list):
            self.lists[slot], self.has_list[slot] = frozenset(value), True

    def isin(self, values: Iterable[object], size: int) -> np.ndarray:
        ints = [v for v in (_as_int(value) for value in values) if v is not None and -(2**63) <= v < 2**63]
        strings = [str(value) for value in values]
        passed = self.has_int[:size] & np.isin(self.ints[:size], np.array(ints, np.int64))
        if self.has_str[:size].any():
            passed |= self.has_str[:size] & np.isin(self.strs[:size], np.array(strings, object))
        for slot in np.flatnonzero(self.has_list[:size]):
            passed[slot] = any(_equal(item, value) for item in self.lists[slot] for value in values)
        return passed

    def compare(self, bound: object, size: int, lower: bool) -> np.ndarray:
        passed = np.zeros(size, bool)
        as_int = _as_int(bound)
        if as_int is not None:
            ints = self.ints[:size]
            passed |= self.has_int[:size] & ((ints >= as_int) if lower else (ints <= as_int))
        strings = self.has_str[:size]
        if strings.any():
            text = str(bound)
            slots = np.flatnonzero(strings)
            values = self.strs[slots]
            passed[slots] = (values >= text) if lower else (values <= text)
        return passed

    def contains_all(self, values: Iterable[object], size: int) -> np.ndarray:
        passed = np.zeros(size, bool)
        for slot in np.flatnonzero(self.has_list[:size]):
            stored = self.lists[slot]
            passed[slot] = all(any(_equal(item, value) for item in stored) for value in values)
        return passed
