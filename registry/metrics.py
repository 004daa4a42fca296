"""The registry's Prometheus metrics: calls answered, by method and status code.

One ``CollectorRegistry`` per running registry (as for a district server,
``rt_server.flows.metrics``), served on ``[metrics] listen`` when the config
sets it. Labels are the method and the gRPC status code: never a district code.
``LookupDistrict`` counts the directory lookups, ``Enroll`` the enrollments
(``OK`` done, ``PERMISSION_DENIED`` refused).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["RegistryMetrics"]


class RegistryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._rpcs = Counter(
            "rt_registry_rpcs",
            "Calls the registry answered, by method (LookupDistrict, Enroll, ...) and "
            "gRPC status code",
            ["method", "code"],
            registry=self.registry,
        )

    def rpc(self, method: str, code: str) -> None:
        self._rpcs.labels(method, code).inc()
