"""runtime.watching.Informer pages its LISTs and caches objects without managedFields."""

import json
from typing import Any

from kubeserial_common.runtime.watching import LAST_APPLIED, Informer


class Response:
    status = 200

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = json.dumps(body).encode()

    async def read(self) -> bytes:
        return self.body

    def release(self) -> None:
        pass


def item(name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "managedFields": [{"manager": "x"}],
            "annotations": {LAST_APPLIED: "{...}", "kept": "yes"},
        }
    }


async def test_list_is_paged_and_trimmed() -> None:
    calls: list[dict[str, Any]] = []

    async def list_call(**kwargs: Any) -> Response:
        calls.append(kwargs)
        if "_continue" not in kwargs:
            return Response({"metadata": {"continue": "t1"}, "items": [item("a"), item("b")]})
        return Response({"metadata": {"resourceVersion": "42"}, "items": [item("c")]})

    events: list[tuple[str, str]] = []
    informer = Informer(
        list_call=list_call,
        handler=lambda kind, obj: events.append((kind, obj["metadata"]["name"])),
        name="t",
        list_kwargs={"label_selector": "x=y"},
        page_size=2,
    )
    assert await informer._list() == "42"
    assert [c.get("_continue") for c in calls] == [None, "t1"]
    assert all(c["limit"] == 2 and c["label_selector"] == "x=y" for c in calls)
    assert sorted(informer.cache) == [("", "a"), ("", "b"), ("", "c")]
    assert informer.cache[("", "a")]["metadata"] == {"name": "a", "annotations": {"kept": "yes"}}
    assert events == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]
