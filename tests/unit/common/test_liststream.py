"""core.liststream: a LIST answer parsed item by item as it arrives, in pieces of any size."""

import json
from typing import Any

import pytest

from kubeserial_common.core.liststream import ListStream, ListStreamError

ITEMS = [
    {"metadata": {"name": "a", "resourceVersion": "17"}, "spec": {"n": 12345, "ok": True, "x": None}},
    {"metadata": {"name": "ü-ß", "labels": {"tag": "日本"}}, "spec": {"path": "/dev/serial/by-id/x,y"}},
    {"metadata": {"name": "c"}, "spec": {"list": [1, [2, {"3": "]}"}]]}},
]


def document(*, items_first: bool, indent: int | None = None) -> bytes:
    head = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "4711"}}
    body = {"items": ITEMS, **head} if items_first else {**head, "items": ITEMS}
    return json.dumps(body, ensure_ascii=False, indent=indent).encode()


def parse(data: bytes, piece: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    stream = ListStream(max_item=10_000)
    items: list[dict[str, Any]] = []
    for start in range(0, len(data), piece):
        items += stream.feed(data[start : start + piece])
    stream.close()
    return items, stream.head


@pytest.mark.parametrize("items_first", [True, False])  # custom resources' lists / built-in ones
@pytest.mark.parametrize("indent", [None, 2])
def test_every_item_and_the_head_come_out_whatever_the_piece_size(
    items_first: bool, indent: int | None
) -> None:
    data = document(items_first=items_first, indent=indent)
    for piece in (*range(1, 12), 64, len(data)):  # cuts inside numbers, escapes and UTF-8 sequences
        items, head = parse(data, piece)
        assert items == ITEMS, piece
        assert head["metadata"] == {"resourceVersion": "4711"} and head["kind"] == "List"


def test_items_come_out_as_soon_as_they_are_whole() -> None:
    data = document(items_first=True)
    first_end = data.index(b"}}", data.index(b'"a"')) + 2
    stream = ListStream(max_item=10_000)
    assert stream.feed(data[:first_end]) == []  # whole, but nothing after it yet
    assert stream.feed(data[first_end : first_end + 1]) == [ITEMS[0]]


def test_an_empty_list() -> None:
    assert parse(b'{"items":[],"metadata":{"resourceVersion":"3"}}', 2) == (
        [],
        {"metadata": {"resourceVersion": "3"}},
    )


@pytest.mark.parametrize(
    "data",
    [
        b'["not", "an", "object"]',
        b'{"items": [1, 2]}',
        b'{"items": [{"a": 1}]',  # cut off before the closing brace
        b'{"items" [{"a": 1}]}',
        b'{"items": [{"a": 1}]} {"again": 1}',
    ],
)
def test_what_is_no_list_is_refused(data: bytes) -> None:
    with pytest.raises(ListStreamError):
        parse(data, 3)


def test_an_item_beyond_the_limit_is_refused_before_it_is_whole() -> None:
    stream = ListStream(max_item=100)
    stream.feed(b'{"items": [{"name": "')
    with pytest.raises(ListStreamError, match="larger than 100"):
        stream.feed(b"x" * 200)
