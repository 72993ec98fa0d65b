"""``backend="dask"``: chunks as Dask tasks, user code in workpool's process engine on each node.

- ``engine``   the caller's side: the Backend, the window, the courier thread
- ``remote``   what a Dask worker runs: each chunk in a local process pool of its own
- ``payload``  what crosses between the two, both ways
- ``cluster``  finding the cluster (address, client, configuration) or starting one

Importing this package does not import Dask; creating a ``DaskBackend`` does.
"""

from __future__ import annotations

from workpool.backends.dask.engine import DaskBackend

__all__ = ["DaskBackend"]
