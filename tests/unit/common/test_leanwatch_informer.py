"""runtime.leanwatch's informer against a fake apiserver on loopback: a scripted HTTP/1.1 server
(the transport faked at the socket, so the informer's own HTTP, chunked-stream and JSON-line
handling run for real). What it checks: watches resume from the last version seen (bookmarks
included); an ERROR 410 event or an HTTP 410 means a LIST at once, no backoff; a LIST after 410
removes what vanished; other failures back off; oversized or split events are handled.
The 410 path on the real apiserver: tests/integration/test_informer_gone.py."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from kubeserial_common.core.errors import Gone, Unreachable
from kubeserial_common.core.resources import SERIALDEVICE
from kubeserial_common.runtime import leanwatch
from kubeserial_common.runtime.lean import Endpoint, LeanClient
from kubeserial_common.runtime.leanwatch import LeanInformer, watch_events

Reply = bytes | None  # None: hold the connection open and answer nothing (a watch with no news)


def item(name: str, rv: int, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": str(rv), "labels": labels, "managedFields": [{}]}}


def listed(rv: int, *items: dict[str, Any]) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    body = json.dumps({"kind": "SerialDeviceList", "metadata": meta, "items": list(items)}).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def streamed(*events: dict[str, Any], split: bool = False) -> bytes:
    """A watch answer: chunked JSON lines; `split` cuts every event across two chunks."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b""
    for event in events:
        line = json.dumps(event).encode() + b"\n"
        body += chunk(line[:7]) + chunk(line[7:]) if split else chunk(line)
    return head + body + b"0\r\n\r\n"


def status(code: int, reason: str) -> bytes:
    body = json.dumps({"kind": "Status", "code": code, "reason": reason, "message": reason}).encode()
    return b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n\r\n" % (code, reason.encode(), len(body)) + body


def expired_event() -> dict[str, Any]:
    message = "The resourceVersion for the provided watch is too old."
    return {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": message},
    }


@dataclass
class FakeApiserver:
    """Answers LISTs and WATCHes from two scripts, in order, and records what was asked."""

    lists: list[Reply] = field(default_factory=list)
    watches: list[Reply] = field(default_factory=list)
    asked: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # ("list"|"watch", params)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode()
                params = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
                kind = "watch" if params.get("watch") == "1" else "list"
                self.asked.append((kind, params))
                script = self.watches if kind == "watch" else self.lists
                reply = script.pop(0) if script else None
                if reply is None:
                    await reader.read()  # until the client goes away
                    return
                writer.write(reply)
                await writer.drain()
                return  # every answer ends its connection: watches and lists ask for that
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    def watched_versions(self) -> list[str]:
        return [params["resourceVersion"] for kind, params in self.asked if kind == "watch"]


@pytest.fixture
async def server() -> AsyncIterator[FakeApiserver]:
    fake = FakeApiserver()
    listening = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.port = listening.sockets[0].getsockname()[1]
    try:
        yield fake
    finally:
        listening.close()


@pytest.fixture
async def api(server: FakeApiserver) -> AsyncIterator[LeanClient]:
    async with LeanClient(Endpoint(server=f"http://127.0.0.1:{server.port}")) as client:
        yield client


def informer(api: LeanClient, events: list[tuple[str, str]], **settings: Any) -> LeanInformer:
    return LeanInformer(
        client=api,
        resource=SERIALDEVICE,
        handler=lambda kind, obj: events.append((kind, obj["metadata"]["name"])),
        name="unit",
        **settings,
    )


async def until(predicate: Any, *, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {within}s; asked: {predicate}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(inf: LeanInformer) -> AsyncIterator[None]:
    task = asyncio.create_task(inf.run())
    try:
        yield
    finally:
        # Cancel until it is done: on Python 3.11, asyncio.wait_for (around every read of the
        # watch) can swallow a cancellation that arrives as its inner read completes; under load
        # the single cancel was lost and this teardown waited for ever (seen: 300 s timeout).
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=1)


async def test_watch_resumes_from_the_last_version_seen_and_relists_on_an_expired_event(
    server: FakeApiserver, api: LeanClient
) -> None:
    server.lists = [listed(10, item("a", 9), item("b", 10)), listed(30, item("a", 11), item("c", 25))]
    server.watches = [
        streamed(
            {"type": "MODIFIED", "object": item("a", 11, changed="yes")},
            {"type": "DELETED", "object": item("b", 12)},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            split=True,
        ),
        streamed(expired_event()),  # the resume from 15 is too old
        None,  # after the LIST: a quiet watch
    ]
    events: list[tuple[str, str]] = []
    inf = informer(api, events)
    async with running(inf):
        await until(lambda: len(server.watched_versions()) == 3)
        assert server.watched_versions() == ["10", "15", "30"]
        assert (inf.relists, inf.expired, inf.backoffs) == (2, 1, 0)
        assert set(inf.cache) == {("", "a"), ("", "c")}
        assert "managedFields" not in inf.cache[("", "a")]["metadata"]
        assert events == [
            ("ADDED", "a"),
            ("ADDED", "b"),
            ("MODIFIED", "a"),
            ("DELETED", "b"),
            ("MODIFIED", "a"),
            ("ADDED", "c"),
        ]


async def test_an_http_410_to_the_watch_request_relists_without_backoff(
    server: FakeApiserver, api: LeanClient
) -> None:
    server.lists = [listed(5, item("a", 5)), listed(40)]
    server.watches = [status(410, "Expired"), None]
    events: list[tuple[str, str]] = []
    inf = informer(api, events)
    async with running(inf):
        await until(lambda: len(server.watched_versions()) == 2)
        assert server.watched_versions() == ["5", "40"]
        assert (inf.relists, inf.expired, inf.backoffs) == (2, 1, 0)
        assert inf.cache == {} and events == [("ADDED", "a"), ("DELETED", "a")]


async def test_other_failures_back_off_and_then_list_again(server: FakeApiserver, api: LeanClient) -> None:
    server.lists = [listed(5, item("a", 5)), status(500, "InternalError"), listed(9, item("a", 9))]
    server.watches = [status(403, "Forbidden"), None]
    inf = informer(api, [])
    async with running(inf):
        await until(lambda: len(server.watched_versions()) == 2, within=10)
        assert (inf.relists, inf.expired, inf.backoffs) == (2, 0, 2)
        assert server.watched_versions() == ["5", "9"]


def listed_in_pieces(rv: int, *items: dict[str, Any], piece: int = 5) -> bytes:
    """A custom resource's LIST answer as the apiserver writes it (keys sorted: `items` before
    `metadata`), chunked into pieces of `piece` bytes, so items and numbers are cut everywhere."""
    body = json.dumps(
        {"apiVersion": "v1", "items": list(items), "kind": "List", "metadata": {"resourceVersion": str(rv)}}
    ).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    pieces = b"".join(chunk(body[i : i + piece]) for i in range(0, len(body), piece))
    return head + pieces + b"0\r\n\r\n"


def listed_versions(server: FakeApiserver) -> list[str]:
    return [params["resourceVersion"] for kind, params in server.asked if kind == "list"]


async def test_lists_come_from_the_watch_cache_whole_with_the_selector(
    server: FakeApiserver, api: LeanClient
) -> None:
    """resourceVersion=0, no limit (the watch cache ignores it): the answer is parsed as it streams."""
    server.lists = [listed_in_pieces(7, item("a", 1), item("b", 2, tag="é"))]
    inf = informer(api, [], label_selector="x=y")
    async with running(inf):
        await until(lambda: server.watched_versions() == ["7"])
        (kind, params), *_ = server.asked
        assert kind == "list" and params == {"resourceVersion": "0", "labelSelector": "x=y"}
        assert server.asked[-1][1]["labelSelector"] == "x=y"
        assert set(inf.cache) == {("", "a"), ("", "b")}
        assert inf.cache[("", "b")]["metadata"]["labels"] == {"tag": "é"}


async def test_a_list_after_a_410_asks_for_at_least_the_last_version_seen(
    server: FakeApiserver, api: LeanClient
) -> None:
    """Not "0": another apiserver's watch cache may be behind what this informer already saw."""
    server.lists = [listed(10, item("a", 9)), listed(30, item("a", 20))]
    server.watches = [
        streamed({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}, expired_event()),
        None,
    ]
    inf = informer(api, [])
    async with running(inf):
        await until(lambda: server.watched_versions() == ["10", "30"])
        assert listed_versions(server) == ["0", "15"]


async def test_a_list_cut_off_mid_answer_is_retried_from_any_version(
    server: FakeApiserver, api: LeanClient
) -> None:
    whole = listed_in_pieces(7, item("a", 1))
    server.lists = [whole[: len(whole) // 2], listed(8, item("a", 1))]
    inf = informer(api, [])
    async with running(inf):
        await until(lambda: server.watched_versions() == ["8"], within=10)
        assert listed_versions(server) == ["0", "0"] and inf.backoffs == 1


async def test_watch_events_raise_typed_errors(server: FakeApiserver, api: LeanClient) -> None:
    async def collect() -> list[dict[str, Any]]:
        stream = watch_events(api, SERIALDEVICE, resource_version="1", timeout_seconds=5)
        return [event async for event in stream]

    server.watches = [status(410, "Expired")]
    with pytest.raises(Gone):
        await collect()
    too_big = {"type": "ADDED", "object": {"metadata": {"name": "x" * (leanwatch.MAX_EVENT + 1)}}}
    server.watches = [streamed(too_big)]
    with pytest.raises(Unreachable, match="larger than"):
        await collect()
    server.watches = [b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"ty']  # cut off
    with pytest.raises(Unreachable):
        await collect()


async def test_the_periodic_resync_replays_the_cache_without_a_list(
    server: FakeApiserver, api: LeanClient
) -> None:
    """client-go's resync: every cached object to the handler again, and the watch goes on from the
    last version seen; the apiserver is asked for no LIST after the first (issue 13)."""
    server.lists = [listed(5, item("a", 5))]
    # Watches that end at once (the informer watches again until its resync is due), then a quiet one.
    server.watches = [streamed({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "6"}}})]
    server.watches += [streamed() for _ in range(500)] + [None]
    events: list[tuple[str, str]] = []
    inf = informer(api, events, resync_seconds=0.05)
    async with running(inf):
        await until(lambda: inf.resyncs >= 2)
        assert [kind for kind, _ in server.asked].count("list") == 1 and inf.relists == 1
        assert set(server.watched_versions()) == {"5", "6"} and server.watched_versions()[0] == "5"
        assert events[:3] == [("ADDED", "a"), ("MODIFIED", "a"), ("MODIFIED", "a")]


async def test_a_429_to_the_list_is_retried_after_a_pause(server: FakeApiserver, api: LeanClient) -> None:
    """kube-apiserver answers 429 to a LIST from a watch cache it is still filling (a resource
    nobody read since it started), and under priority and fairness: retried, from any version."""
    server.lists = [status(429, "TooManyRequests"), listed(5, item("a", 5))]
    inf = informer(api, [])
    async with running(inf):
        await until(lambda: server.watched_versions() == ["5"])
        assert listed_versions(server) == ["0", "0"] and (inf.relists, inf.backoffs) == (1, 1)


async def test_replays_go_to_the_resync_handler_in_slices(api: LeanClient) -> None:
    """A replay of many objects lets the event loop run in between (the controller's watches and
    workers go on during it), and goes to its own handler when one is given."""
    handled: list[tuple[str, str]] = []
    replayed: list[str] = []
    inf = informer(api, handled)
    inf.resync_handler = lambda kind, obj: replayed.append(kind)
    count = 3 * leanwatch.REPLAY_SLICE
    inf.cache = {("", f"d{i:04d}"): item(f"d{i:04d}", 5) for i in range(count)}
    turns: list[int] = []  # how many objects were replayed each time another task got to run

    async def observer() -> None:
        while True:
            turns.append(len(replayed))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(observer())
    await asyncio.sleep(0)
    await inf._replay()
    watcher.cancel()
    assert replayed == ["MODIFIED"] * count and handled == [] and inf.resyncs == 1
    assert {leanwatch.REPLAY_SLICE, 2 * leanwatch.REPLAY_SLICE} <= set(turns)
