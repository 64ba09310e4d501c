"""Fixtures for the injector's unit tests."""

import copy
from collections.abc import Callable
from typing import Any

import pytest

Patcher = Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]]


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(document: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    result = copy.deepcopy(document)
    for op in ops:
        *parents, last = [_unescape(t) for t in op["path"].split("/")[1:]]
        target: Any = result
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        key: Any = int(last) if isinstance(target, list) and last != "-" else last
        if op["op"] == "test":
            assert target[key] == op["value"], f"test failed at {op['path']}"
        elif op["op"] == "add":
            if isinstance(target, list):
                target.insert(len(target) if key == "-" else key, op["value"])
            else:
                target[key] = op["value"]
        elif op["op"] == "replace":
            assert key in target if isinstance(target, dict) else key < len(target), op["path"]
            target[key] = op["value"]
        else:
            raise AssertionError(f"unexpected op {op['op']}")
    return result


@pytest.fixture
def patched() -> Patcher:
    """A small RFC 6902 applier (add, replace, test) to check what a JSONPatch produces."""
    return apply_patch
