"""A LIST answer parsed as it arrives: one item at a time, whatever the size of the whole.

A LIST served from kube-apiserver's watch cache (`resourceVersion=0`, or a version it already has)
costs it no etcd read and no decoding, but it is not paged: it comes as one JSON document, tens of
MiB for 10,000 objects. `ListStream` takes that document in pieces (`feed`) and hands back each
complete item, so a reader holds one piece and one item, never the document. The top-level keys
may come in any order (a custom resource's list has `items` before `metadata`, a built-in one
after): everything but `items` is kept in `head`.

Pure: no I/O. A value is taken only once something follows it, so a number or a name cut by a
piece boundary is never taken half.
"""

import codecs
import json
from typing import Any

_decoder = json.JSONDecoder()
_WHITESPACE = " \t\r\n"


class ListStreamError(ValueError):
    """The document is not a JSON object, or an item grew beyond the limit."""


class ListStream:
    def __init__(self, *, max_item: int) -> None:
        self.max_item = max_item
        self.head: dict[str, Any] = {}
        self._text = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""
        self._state = "start"  # start -> key <-> value | items -> end
        self._key = ""

    @property
    def complete(self) -> bool:
        return self._state == "end"

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The items completed by `data`, in order."""
        self._buffer += self._text.decode(data)
        items: list[dict[str, Any]] = []
        position = 0
        while True:
            position = self._skip(position)
            if position >= len(self._buffer):
                break
            advanced = self._step(position, items)
            if advanced is None:
                break
            position = advanced
        self._buffer = self._buffer[position:]
        if len(self._buffer) > self.max_item:
            raise ListStreamError(f"a list item is larger than {self.max_item} characters")
        return items

    def close(self) -> None:
        """The document ended: raise unless it was whole."""
        self._buffer += self._text.decode(b"", final=True)
        if self._state != "end" or self._buffer.strip():
            raise ListStreamError("the list ended before its closing brace")

    def _skip(self, position: int) -> int:
        while position < len(self._buffer) and self._buffer[position] in _WHITESPACE:
            position += 1
        return position

    def _value(self, position: int) -> tuple[Any, int] | None:
        """The JSON value at `position` and where it ends, or None while it is incomplete."""
        try:
            value, end = _decoder.raw_decode(self._buffer, position)
        except json.JSONDecodeError:
            return None
        if end >= len(self._buffer):
            return None  # nothing after it yet: a number or literal may go on in the next piece
        return value, end

    def _step(self, position: int, items: list[dict[str, Any]]) -> int | None:
        """Consume one token or value at `position`; None when more input is needed."""
        char = self._buffer[position]
        if self._state == "start":
            if char != "{":
                raise ListStreamError(f"a list is a JSON object, not {char!r}...")
            self._state = "key"
            return position + 1
        if self._state == "key":
            if char == ",":
                return position + 1
            if char == "}":
                self._state = "end"
                return position + 1
            parsed = self._value(position)
            if parsed is None:
                return None
            key, end = parsed
            colon = self._skip(end)
            if colon >= len(self._buffer):
                return None
            if not isinstance(key, str) or self._buffer[colon] != ":":
                raise ListStreamError("a list's keys are strings followed by ':'")
            self._key = key
            self._state = "value"
            return colon + 1
        if self._state == "value":
            if self._key == "items" and char == "[":
                self._state = "items"
                return position + 1
            parsed = self._value(position)
            if parsed is None:
                return None
            self.head[self._key], end = parsed
            self._state = "key"
            return end
        if self._state == "items":
            if char == ",":
                return position + 1
            if char == "]":
                self._state = "key"
                return position + 1
            parsed = self._value(position)
            if parsed is None:
                return None
            item, end = parsed
            if not isinstance(item, dict):
                raise ListStreamError("a list's items are JSON objects")
            items.append(item)
            return end
        raise ListStreamError("data after the end of the list")
