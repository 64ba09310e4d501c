"""Logging, configured once per process: JSON in a cluster, readable on a terminal.

Two renderers with one output format:
- structlog (the controller, the monitor, the injector): `configure_logging(...)`;
- lean (the gateway and its bridge, one process per device or consumer): `configure_logging(...,
  lean=True)` writes the same JSON lines (event, the fields, level, timestamp; `exception` with the
  traceback) without importing structlog (about 2 MiB resident, and rich's console machinery when
  rich happens to be installed).
Library and service code logs through `get_logger(name)`: a proxy that goes to structlog unless
the process chose the lean renderer, so structlog's own tools (`structlog.testing.capture_logs`)
keep working for code that uses it.
"""

import datetime
import json
import logging
import os
import sys
import traceback
from typing import Any, Literal, TextIO

LogFormat = Literal["auto", "json", "console"]
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50, "fatal": 50}


class _Lean:
    def __init__(self, level: int, fmt: LogFormat, stream: TextIO) -> None:
        self.level, self.fmt, self.stream = level, fmt, stream

    def emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if _LEVELS[level] < self.level:
            return
        exc_info = fields.pop("exc_info", None)
        record: dict[str, Any] = {"event": event, **fields, "level": level}
        record["timestamp"] = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        if exc_info:
            exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
            if exc is not None:
                record["exception"] = "".join(traceback.format_exception(exc)).rstrip()
        if self.fmt == "json":
            line = json.dumps(record, default=repr)
        else:
            rest = " ".join(
                f"{k}={v}" for k, v in record.items() if k not in ("event", "level", "timestamp", "exception")
            )
            line = f"{record['timestamp']} [{level:<9}] {event:<30} {rest}".rstrip()
            if "exception" in record:
                line += "\n" + record["exception"]
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass


_lean: _Lean | None = None


class Logger:
    """`get_logger(name)`: debug/info/warning/error/exception(event, **fields)."""

    __slots__ = ("_name", "_structlog")

    def __init__(self, name: str) -> None:
        self._name = name
        self._structlog: Any = None

    def _log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if _lean is not None:
            _lean.emit(level, event, fields)
            return
        if self._structlog is None:
            import structlog

            self._structlog = structlog.get_logger(self._name)
        getattr(self._structlog, level)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._log("critical", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        fields.setdefault("exc_info", True)
        self._log("error", event, fields)


def get_logger(name: str) -> Logger:
    return Logger(name)


class _JsonLines(logging.Formatter):
    """Lines from the stdlib `logging` (asyncio's "Task exception was never retrieved", uvicorn's
    errors, libraries) as the same JSON objects as ours: event, logger, level, timestamp, exception."""

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        line: dict[str, Any] = {
            "event": record.getMessage(),
            "logger": record.name,
            "level": level if level in _LEVELS else "info",
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat()
            .replace("+00:00", "Z"),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=repr)


def _route_stdlib_logging(level: int, fmt: LogFormat) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines() if fmt == "json" else logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def configure_logging(*, level: str = "info", fmt: LogFormat = "auto", lean: bool = False) -> None:
    global _lean
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() and "KUBERNETES_SERVICE_HOST" not in os.environ else "json"
    numeric = _LEVELS[level.lower()]
    _route_stdlib_logging(numeric, fmt)
    if lean:
        _lean = _Lean(numeric, fmt, sys.stderr)
        return
    _lean = None
    import structlog

    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
