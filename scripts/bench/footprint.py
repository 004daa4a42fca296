"""What a district server costs when it has nothing to do: ``idle_rss_mb``.

A real ``rt serve`` process (the prior district, its database as the
benchmark left it or created on first start), started, left to settle, then
its resident set (``VmRSS``) read from the kernel.
"""

from __future__ import annotations

import time
from typing import Any

from scripts.bench.cluster import Cluster


def idle_rss(cluster: Cluster, settle_seconds: float) -> dict[str, Any]:
    assert cluster.prior is not None
    proc = cluster.serve(cluster.prior, None)
    try:
        time.sleep(settle_seconds)
        rss = proc.rss_mb()
    finally:
        cluster.stop_district(cluster.prior)
    return {"scenario": "idle", "idle_rss_mb": rss, "settle_s": settle_seconds}
