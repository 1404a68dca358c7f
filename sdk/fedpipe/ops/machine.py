"""What this process may use of the machine it runs on."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, which a container's or a
    pod's CPU set narrows, rather than every core the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's matrix products run on one thread inside.

    OpenBLAS's workers, once woken, spin for about a tenth of a second after each call: a
    10 ms product of the 2,000 held-out examples left 115 ms of CPU burnt behind it, which
    in a simulation is a core taken from the next round's training. At fedpipe's sizes one
    thread does the product about as fast (10-11.5 ms against 8-12 ms on two cores); a
    simulated round lost 45 ms of training time to the spin and gave back 10 ms of scoring
    (docs/performance.md, section 15)."""
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


@functools.cache
def _blas_controller():
    """The BLAS libraries loaded in this process (found once: a scan of loaded libraries)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
