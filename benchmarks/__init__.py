"""Side-by-side benchmarks of workpool and its peers; run with ``python -m benchmarks``.

This package is deliberately light to import: worker processes started by spawn or a
fork server import it (to reach ``benchmarks.workloads``), so nothing here may pull in
a pool library, rich or numpy at import time.
"""
