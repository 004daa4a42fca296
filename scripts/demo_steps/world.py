"""The demo's world: a registry with two districts registered, both enrolled and serving.

Steps 1 to 3 of ``scripts/demo.py``, as an operator and each district's IT staff would
take them, and the made-up districts and schools the rest of the demo uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rt_client.tls import REGISTRY_SERVER_NAME
from scripts.demo_steps.commands import Demo, console, wait_for
from scripts.loopback import free_port, health_ok

# Two made-up districts (county-district codes) with one registered school each.
PRIOR_CODE, PRIOR_NAME = "1964733", "Prior Valley Unified"
PRIOR_SCHOOL, PRIOR_SCHOOL_NAME = "19647331932334", "Lincoln High"
NEW_CODE, NEW_NAME = "3768338", "New Harbor Unified"
NEW_SCHOOL, NEW_SCHOOL_NAME = "37683383732997", "Roosevelt High"
PRIOR_REGISTRAR = "Alice Ortiz"  # recorded as the acting staff member (rt --as)
NEW_REGISTRAR = "Ben Okafor"

READY_TIMEOUT = 20.0  # seconds for a server to come up


@dataclass
class Registry:
    home: Path
    address: str
    enroll_address: str
    ca: Path
    signing_key: str
    auth_codes: dict[str, str]


@dataclass
class DistrictRun:
    code: str
    data_dir: Path
    config: Path
    endpoint: str
    actor: str


def step_registry(demo: Demo) -> Registry:
    """The operator creates the registry, registers both districts and serves it."""
    home = demo.work / "registry"
    address = f"127.0.0.1:{free_port()}"
    enroll_address = f"127.0.0.1:{free_port()}"
    rtr = demo.tool("rt-registry")
    demo.run([rtr, "init", demo.rel(home), "--listen", address, "--enroll-listen", enroll_address])
    info = json.loads(
        demo.run([rtr, "info", "--home", demo.rel(home), "--json"], show=False).stdout
    )
    codes = {}
    for code, name, school, school_name in (
        (PRIOR_CODE, PRIOR_NAME, PRIOR_SCHOOL, PRIOR_SCHOOL_NAME),
        (NEW_CODE, NEW_NAME, NEW_SCHOOL, NEW_SCHOOL_NAME),
    ):
        out = demo.run(
            [
                rtr, "district", "add", "--home", demo.rel(home), "--code", code, "--name", name,
                "--school", f"{school}:{school_name}", "--json",
            ],
            show=False,
        ).stdout  # fmt: skip
        codes[code] = json.loads(out)["authorization_code"]
        console.print(f"  district {code} ({name}) added; authorization code captured")
    demo.run([rtr, "district", "list", "--home", demo.rel(home)])
    server = demo.start("registry", [rtr, "serve", "--home", demo.rel(home)])

    import grpc

    ca_pem = (demo.work / info["ca_certificate"]).read_bytes()
    enroll_creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    wait_for(
        "the registry's health check",
        lambda: True if health_ok(enroll_address, enroll_creds, REGISTRY_SERVER_NAME) else None,
        READY_TIMEOUT,
        server,
    )
    console.print(f"  registry is SERVING (directory {address}, enrollment {enroll_address})")
    return Registry(
        home=home,
        address=address,
        enroll_address=enroll_address,
        ca=demo.work / info["ca_certificate"],
        signing_key=info["signing_key"],
        auth_codes=codes,
    )


def step_enroll(demo: Demo, registry: Registry, code: str, actor: str) -> DistrictRun:
    """A district's IT staff enrolls it: keys generated locally, config written."""
    data_dir = demo.work / f"district-{code}"
    endpoint = f"127.0.0.1:{free_port()}"  # the peer port goes into the directory entry
    demo.run(
        [
            demo.tool("rt"), "enroll", "--code", code,
            "--registry", registry.address, "--registry-enroll", registry.enroll_address,
            "--registry-ca", demo.rel(registry.ca), "--registry-key", registry.signing_key,
            "--endpoint", endpoint, "--data-dir", demo.rel(data_dir),
        ],
        env={"RT_AUTH_CODE": registry.auth_codes[code]},  # not on the command line
    )  # fmt: skip
    return DistrictRun(code, data_dir, data_dir / "district.toml", endpoint, actor)


def step_serve(demo: Demo, district: DistrictRun) -> None:
    """Start a district server and wait until its registrar socket answers health checks."""
    server = demo.start(
        f"district-{district.code}",
        [demo.tool("rt"), "serve", "--config", demo.rel(district.config)],
    )
    socket_path = district.data_dir / "registrar.sock"
    wait_for(
        f"district {district.code}'s health check",
        lambda: True if socket_path.exists() and health_ok(f"unix:{socket_path}") else None,
        READY_TIMEOUT,
        server,
    )
    console.print(f"  district {district.code} is SERVING (peers on {district.endpoint})")
