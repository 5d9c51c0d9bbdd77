"""Model replicas lower their own CPU priority so the proxy, ingress and shards answer first under load."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Lowering priority cannot be undone without privileges, so it happens in a child process.
PROBE = textwrap.dedent("""
    import os, threading, time
    from models.deployments import lower_cpu_priority

    def nice_of(tid):
        return os.getpriority(os.PRIO_PROCESS, tid)

    ready, stop, seen = threading.Event(), threading.Event(), {}
    def worker():
        seen["before"] = threading.get_native_id()
        ready.set()
        stop.wait()
    earlier = threading.Thread(target=worker)
    earlier.start()
    ready.wait()
    lower_cpu_priority(7)
    later = threading.Thread(target=lambda: seen.update(later=nice_of(threading.get_native_id())))
    later.start(); later.join()
    print(nice_of(0), nice_of(seen["before"]), seen["later"])
    stop.set()
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is a Linux notion")
def test_lowering_priority_reaches_every_thread_and_threads_started_later():
    answer = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    main_thread, earlier_thread, later_thread = map(int, answer.stdout.split())
    assert (main_thread, earlier_thread, later_thread) == (7, 7, 7)
