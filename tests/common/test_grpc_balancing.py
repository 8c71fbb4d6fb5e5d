"""Client-side load balancing of the channels that services/common/grpc_client builds, against real
grpc.aio servers made by services/common/grpc_server: calls spread over every address of a peer,
and servers end connections after a maximum age (so that clients resolve the name again) without
cutting the streams that run on them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common import grpc_client, grpc_server
from services.common.gen.radiology.v1 import storage_pb2_grpc
from services.common.storage_client import StorageClient
from services.storage.backends import LocalBackend
from services.storage.service import StorageServicer

STREAM_MESSAGES = 40
STREAM_GAP = 0.1  # a 4 s stream


def _identity(name: str) -> grpc.GenericRpcHandler:
    """t.Who answers the server's name and the caller's address (one per connection); t.Stream
    sends N messages, STREAM_GAP apart."""

    async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return f"{name} {context.peer()}".encode()

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()
            await asyncio.sleep(STREAM_GAP)

    return grpc.method_handlers_generic_handler(
        "t.T",
        {
            "Who": grpc.unary_unary_rpc_method_handler(who),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )


async def _identity_server(
    name: str, bind: str, options: list[tuple[str, int]] = grpc_server.SERVER_OPTIONS
) -> tuple[grpc.aio.Server, int]:
    server = grpc_server.create_server(options)
    server.add_generic_rpc_handlers([_identity(name)])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(bind)
    assert port
    await server.start()
    return server, port


async def _who(channel: grpc.aio.Channel, calls: int, gap: float = 0.0) -> list[tuple[str, str]]:
    """(server name, client address) of each of `calls` calls."""
    who = channel.unary_unary("/t.T/Who")
    seen = []
    for _ in range(calls):
        name, peer = (await who(b"", timeout=5)).decode().split(" ", 1)
        seen.append((name, peer))
        await asyncio.sleep(gap)
    return seen


def test_targets() -> None:
    assert grpc_client.target("storage:50052") == "dns:///storage:50052"
    assert grpc_client.target("127.0.0.1:50052") == "dns:///127.0.0.1:50052"
    assert grpc_client.target("localhost:50052") == "dns:///localhost:50052"
    assert grpc_client.target("storage.radiology.svc.cluster.local:50052") == (
        "dns:///storage.radiology.svc.cluster.local:50052"
    )
    assert grpc_client.target("[::1]:50052") == "dns:///[::1]:50052"
    # Addresses that name their resolver stay as they are.
    for addr in ("ipv4:127.0.0.1:1,127.0.0.1:2", "dns:///storage:50052", "unix:/run/s.sock"):
        assert grpc_client.target(addr) == addr


async def test_calls_reach_both_storage_services_behind_one_target(tmp_path: Path) -> None:
    """Two storage services (each with its own backend) behind one two-address target: the
    objects written through one channel land on both."""
    backends, servers, ports = [], [], []
    for i in range(2):
        backend = LocalBackend(tmp_path / f"objects{i}", fsync=False)
        server = grpc_server.create_server()
        storage_pb2_grpc.add_StorageServiceServicer_to_server(StorageServicer(backend), server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        backends.append(backend)
        servers.append(server)
    balanced = grpc_client.channel(f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}", "round_robin")
    direct = [grpc_client.channel(f"127.0.0.1:{p}") for p in ports]
    try:
        client = StorageClient(balanced, 5.0)

        async def one(data: bytes) -> AsyncIterator[bytes]:
            yield data

        for i in range(12):
            await client.put(f"u/j/{i}.bin", "application/octet-stream", one(b"x" * (i + 1)))
        held = [{o.key for o in (await StorageClient(ch, 5.0).list("u/")).objects} for ch in direct]
        assert held[0] and held[1], held
        assert held[0] | held[1] == {f"u/j/{i}.bin" for i in range(12)}
        assert not held[0] & held[1]
    finally:
        for ch in [balanced, *direct]:
            await ch.close()
        for server in servers:
            await server.stop(None)
        for backend in backends:
            await backend.close()


async def test_round_robin_is_what_spreads_the_calls() -> None:
    """The same two-address target on a channel without our service config (gRPC's default,
    pick_first) sends every call to one server; ours with round_robin sends them to both, in turn,
    and goes on with the other one when a server stops."""
    s0, p0 = await _identity_server("s0", "127.0.0.1:0")
    s1, p1 = await _identity_server("s1", "127.0.0.1:0")
    addr = f"ipv4:127.0.0.1:{p0},127.0.0.1:{p1}"
    plain = grpc.aio.insecure_channel(addr)
    ours = grpc_client.channel(addr, "round_robin")
    try:
        assert {name for name, _ in await _who(plain, 10)} == {"s0"}
        names = [name for name, _ in await _who(ours, 10)]
        assert set(names) == {"s0", "s1"}
        # Once both connections are up (the first calls may go to the first one ready), in turn.
        names = [name for name, _ in await _who(ours, 10)]
        assert names.count("s0") == names.count("s1") == 5, names
        await s1.stop(None)
        await asyncio.sleep(0.2)
        assert {name for name, _ in await _who(ours, 6)} == {"s0"}
    finally:
        await plain.close()
        await ours.close()
        await s0.stop(None)
        await s1.stop(None)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_a_plain_host_name_reaches_every_address_it_resolves_to() -> None:
    """A configured "localhost:<port>" goes through the DNS resolver, which gives gRPC both
    loopback addresses: one server on each of them (the same port) gets calls, as the pods behind a
    headless Service's name do."""
    s0, port = await _identity_server("v4", "127.0.0.1:0")
    s1, _ = await _identity_server("v6", f"[::1]:{port}")
    ch = grpc_client.channel(f"localhost:{port}", "round_robin")
    try:
        assert {name for name, _ in await _who(ch, 10)} == {"v4", "v6"}
    finally:
        await ch.close()
        await s0.stop(None)
        await s1.stop(None)


async def test_loopback_addresses_keep_working() -> None:
    """What `make run` and the tests configure: 127.0.0.1:<port> and localhost:<port> with a server
    on 127.0.0.1 only."""
    server, port = await _identity_server("s", "127.0.0.1:0")
    try:
        for addr in (f"127.0.0.1:{port}", f"localhost:{port}"):
            for policy in grpc_client.LOAD_BALANCING_POLICIES:
                ch = grpc_client.channel(addr, policy)
                try:
                    assert {name for name, _ in await _who(ch, 4)} == {"s"}
                    health_stub = health_pb2_grpc.HealthStub(ch)
                    reply = await health_stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                finally:
                    await ch.close()
    finally:
        await server.stop(None)


def test_servers_end_connections_after_a_maximum_age_without_limiting_streams(monkeypatch) -> None:
    options = dict(grpc_server.SERVER_OPTIONS)
    assert options["grpc.max_connection_age_ms"] == grpc_server.MAX_CONNECTION_AGE_MS == 5 * 60 * 1000
    # gRPC reads INT_MAX as "no limit".
    assert options["grpc.max_connection_age_grace_ms"] == grpc_server.MAX_CONNECTION_AGE_GRACE_MS == 2**31 - 1
    # The shared options are all there too.
    assert set(grpc_server.GRPC_OPTIONS) <= set(grpc_server.SERVER_OPTIONS)
    # The servers of the services (create_server without arguments) get them.
    made: list[dict] = []
    monkeypatch.setattr(grpc_server.grpc.aio, "server", lambda **kwargs: made.append(kwargs))
    grpc_server.create_server()
    assert made[0]["options"] == grpc_server.SERVER_OPTIONS


def _aged(age_ms: int, grace_ms: int | None = None) -> list[tuple[str, int]]:
    """SERVER_OPTIONS with a shorter age (and, if given, another grace)."""
    options = dict(grpc_server.SERVER_OPTIONS)
    options["grpc.max_connection_age_ms"] = age_ms
    if grace_ms is not None:
        options["grpc.max_connection_age_grace_ms"] = grace_ms
    return list(options.items())


async def _stream_while_calling(options: list[tuple[str, int]]) -> tuple[str, set[str]]:
    """A 4 s stream and, meanwhile, unary calls on the same channel to a server with `options`:
    how the stream ended, and the client addresses (connections) the calls came from."""
    server, port = await _identity_server("s", "127.0.0.1:0", options)
    ch = grpc_client.channel(f"127.0.0.1:{port}")
    try:
        call = ch.unary_stream("/t.T/Stream")(str(STREAM_MESSAGES).encode())

        async def read() -> str:
            got = 0
            try:
                async for _ in call:
                    got += 1
            except grpc.aio.AioRpcError as exc:
                return f"cut after {got}: {exc.code().name}"
            return f"complete {got}"

        reader = asyncio.create_task(read())
        peers = {peer for _, peer in await _who(ch, 20, gap=STREAM_GAP * STREAM_MESSAGES / 20)}
        return await reader, peers
    finally:
        await ch.close()
        await server.stop(None)


async def test_connection_age_reconnects_and_the_production_grace_keeps_long_streams() -> None:
    """With the age shortened to 1 s and the production grace, the calls of 4 s come over several
    connections (each a new resolution of the name), while a 4 s stream, older than the age plus
    any finite grace gRPC would apply, runs to its end."""
    ended, peers = await _stream_while_calling(_aged(1000))
    assert ended == f"complete {STREAM_MESSAGES}"
    assert len(peers) >= 2, peers


async def test_a_finite_grace_would_cut_the_stream() -> None:
    """Why the grace has no limit: with a grace of 0.5 s, the same stream is cut."""
    ended, _ = await _stream_while_calling(_aged(1000, 500))
    assert ended.startswith("cut after") and ended.endswith("UNAVAILABLE"), ended


async def test_the_default_policy_uses_one_connection_and_refuses_unknown_ones() -> None:
    """pick_first (`make run`, compose): one server of a two-address target gets every call."""
    s0, p0 = await _identity_server("s0", "127.0.0.1:0")
    s1, p1 = await _identity_server("s1", "127.0.0.1:0")
    ch = grpc_client.channel(f"ipv4:127.0.0.1:{p0},127.0.0.1:{p1}")
    try:
        assert len({name for name, _ in await _who(ch, 10)}) == 1
    finally:
        await ch.close()
        await s0.stop(None)
        await s1.stop(None)
    with pytest.raises(ValueError, match="load balancing"):
        grpc_client.channel("127.0.0.1:1", "random")


async def test_with_pick_first_a_restarted_peer_answers_the_first_call() -> None:
    """A peer that was down (the gateway's jobs service restarted by the supervisor) answers the
    very first call after it is back: the idle channel connects for it and the call waits for the
    connection, instead of failing fast in a reconnect backoff as round_robin does."""
    server, port = await _identity_server("first", "127.0.0.1:0")
    ch = grpc_client.channel(f"127.0.0.1:{port}")
    try:
        assert [n for n, _ in await _who(ch, 2)] == ["first", "first"]
        await server.stop(None)
        await asyncio.sleep(3)  # down for a while; nobody calls meanwhile
        server, _ = await _identity_server("second", f"127.0.0.1:{port}")
        assert [n for n, _ in await _who(ch, 1)] == ["second"]
    finally:
        await ch.close()
        await server.stop(None)
