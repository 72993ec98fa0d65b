"""A Dask worker preload that marks the worker's start and holds it up for a while.

The tests set it through ``DASK_DISTRIBUTED__WORKER__PRELOAD`` to know that a local
cluster is in the middle of starting (its worker processes are up, not yet ready).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def dask_setup(worker: object) -> None:
    Path(os.environ["WORKPOOL_TEST_STARTING"], f"starting-{os.getpid()}").touch()
    time.sleep(3)
