"""Index memory on transparent huge pages.

A graph search (HNSW) follows links to vectors scattered over gigabytes, so nearly every step misses the
TLB when memory comes in 4 KiB pages. Linux backs memory with 2 MiB pages only where a process asks for
them (THP mode ``madvise``, the usual default). FAISS does not ask, but glibc's malloc does so for all
its allocations when started with the ``glibc.malloc.hugetlb=1`` tunable. That is why shard actors are
started with it: the same HNSW graph over 5M faces answers 1.16-1.19x the queries/s on huge pages
(bench/search.py, section 4, measures it side by side). Tunables are read when a process starts, so this
is an environment for new processes, never a switch inside a running one.
"""

from __future__ import annotations

import os
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def environment() -> dict[str, str]:
    """Environment variables that start a process with malloc on huge pages, keeping any other tunables
    this process's ``GLIBC_TUNABLES`` sets."""
    current = os.environ.get("GLIBC_TUNABLES", "")
    tunables = [t for t in current.split(":") if t and not t.startswith("glibc.malloc.hugetlb=")]
    return {"GLIBC_TUNABLES": ":".join([*tunables, TUNABLE])}


def enabled_here() -> bool:
    """Whether this process was started with the tunable."""
    return TUNABLE in os.environ.get("GLIBC_TUNABLES", "").split(":")


def kernel_mode() -> str:
    """The kernel's THP mode: ``always``, ``madvise``, ``never``, or ``unknown`` off Linux."""
    try:
        text = _THP_MODE.read_text()
    except OSError:
        return "unknown"
    return text[text.index("[") + 1 : text.index("]")] if "[" in text else "unknown"


def huge_page_bytes() -> int:
    """Bytes of this process's anonymous memory now on huge pages (0 where the kernel does not say)."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
