"""``backend="dask"``: chunks as Dask tasks, user code in workpool's process engine on each node.

- ``engine``   the caller's side: the Backend, the window, the courier thread
- ``fetcher``  finished tasks' results, fetched on the client's event loop
- ``remote``   what a Dask worker runs: each chunk in a local process pool
- ``node``     the local process pools of a Dask worker, kept from call to call
- ``payload``  what crosses between the two, both ways
- ``tracing``  a traced call's times from the nodes, put on the caller's timeline
- ``cluster``  finding the cluster (address, client, configuration) or starting one
- ``worker_setup``  what the worker processes of a cluster started here run first

Importing this package does not import Dask; creating a ``DaskBackend`` does.
"""

from __future__ import annotations

from workpool.backends.dask.engine import DaskBackend

__all__ = ["DaskBackend"]
