"""Pausing Python's cycle collector while a config is built.

A mesh-sized config is hundreds of thousands of new objects, none of them in a cycle. While
they are built, the cycle collector would scan the growing heap over and over: it took two
thirds of the time of reading and validating one. It runs again as soon as the build is done.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cycle_collection_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
