"""``rt_client.peers.channel_target``: one balanced channel over every replica of a district."""

from __future__ import annotations

import json

import pytest

from rt_client.errors import PeerUnavailable, TransferError
from rt_client.peers import channel_target

ROUND_ROBIN = ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} should not have been resolved")


def fake_dns(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    calls: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def test_one_endpoint_is_dialled_as_published() -> None:
    assert channel_target(["10.0.0.1:7400"], no_dns) == ("10.0.0.1:7400", [ROUND_ROBIN])
    # A name is left to gRPC's resolver, which balances over all its addresses.
    assert channel_target(["rt.example.org:7400"], no_dns) == ("rt.example.org:7400", [ROUND_ROBIN])
    assert channel_target(["[2001:db8::1]:7400"], no_dns) == ("[2001:db8::1]:7400", [ROUND_ROBIN])


def test_ipv4_replicas_become_one_round_robin_address_list() -> None:
    target, options = channel_target(["10.0.0.1:7400", "10.0.0.2:7401"], no_dns)
    assert target == "ipv4:10.0.0.1:7400,10.0.0.2:7401"
    assert options == [ROUND_ROBIN]


def test_ipv6_replicas_keep_their_brackets() -> None:
    target, options = channel_target(["[2001:db8::1]:7400", "[2001:db8::2]:7400"], no_dns)
    assert target == "ipv6:[2001:db8::1]:7400,[2001:db8::2]:7400"
    assert options == [ROUND_ROBIN]


def test_replicas_with_their_own_names_are_all_reached() -> None:
    # A gRPC target names one host: dialling "dns:///a..." would never reach b.
    resolve = fake_dns(
        {"a.example.org": ["192.0.2.1"], "b.example.org": ["192.0.2.2", "192.0.2.3"]}
    )
    target, options = channel_target(["a.example.org:7400", "b.example.org:7400"], resolve)
    assert target == "ipv4:192.0.2.1:7400,192.0.2.2:7400,192.0.2.3:7400"
    assert options == [ROUND_ROBIN]


def test_one_address_family_per_channel() -> None:
    both = fake_dns(
        {"a.example.org": ["192.0.2.1", "2001:db8::1"], "b.example.org": ["2001:db8::2"]}
    )
    # IPv6 reaches both replicas, IPv4 only one: IPv6 it is.
    assert channel_target(["a.example.org:7400", "b.example.org:7400"], both)[0] == (
        "ipv6:[2001:db8::1]:7400,[2001:db8::2]:7400"
    )
    dual = fake_dns(
        {
            "a.example.org": ["192.0.2.1", "2001:db8::1"],
            "b.example.org": ["192.0.2.2", "2001:db8::2"],
        }
    )
    assert channel_target(["a.example.org:7400", "b.example.org:7400"], dual)[0] == (
        "ipv4:192.0.2.1:7400,192.0.2.2:7400"
    )


def test_the_same_endpoint_twice_is_one_endpoint() -> None:
    assert channel_target(["10.0.0.1:7400", "10.0.0.1:7400"], no_dns)[0] == "10.0.0.1:7400"


def test_no_endpoint_or_no_address_is_an_error() -> None:
    with pytest.raises(TransferError, match="no endpoint"):
        channel_target([], no_dns)
    with pytest.raises(PeerUnavailable, match="no address"):
        channel_target(
            ["a.example.org:1", "b.example.org:2"],
            fake_dns({"a.example.org": [], "b.example.org": []}),
        )
