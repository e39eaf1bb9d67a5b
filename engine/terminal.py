"""What the terminal shows besides results: one stderr console for progress bars, spinners
and log records, so a log line prints above a live bar instead of breaking it; and text
from a model, a file or a user made safe to show (`printable`, `shown`): no control
character reaches the terminal (an escape sequence could retitle it, clear it or plant a
link), and no text is read as rich markup."""

from __future__ import annotations

import logging
import re
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

STDERR = Console(stderr=True)
"""The console every command's progress bar, spinner, warnings and errors go to."""

ENGINE_LOGGERS = ("ray", "vllm")
"""Engine libraries whose informational chatter shows only with -v."""
PER_REQUEST_LOGGERS = ("httpx", "httpcore")
"""Libraries that log every HTTP request at INFO: shown only at DEBUG (-vv)."""

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Control characters but newline and tab (escape sequences start with one), and the
bidirectional overrides that make text read otherwise than it is."""


def printable(text: Any) -> str:
    """`text` with every control character but newline and tab shown as its escape
    (`\\x1b`), so that it is seen, never obeyed, by the terminal."""
    return _CONTROL.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        str(text),
    )


def shown(text: Any) -> str:
    """`printable(text)` for a string that rich reads as markup: its brackets escaped."""
    return escape(printable(text))


class _SafeHandler(RichHandler):
    """Rich's log handler, showing every record's message with `printable` (a model's
    answer or an endpoint's error body may be quoted in one)."""

    def render_message(self, record: logging.LogRecord, message: str) -> Any:
        return super().render_message(record, printable(message))


def log_level(verbose: int, level: str | None) -> int:
    """The level asked for: `--log-level` when given, else WARNING lowered one step per -v."""
    if level is not None:
        return logging.getLevelNamesMapping()[level.upper()]
    return max(logging.WARNING - 10 * verbose, logging.DEBUG)


def configure_logging(level: int, console: Console = STDERR) -> RichHandler:
    """Send every log record at `level` or above through rich, on `console`.

    Ray installs its own stderr handler on the "ray" logger (and vLLM on "vllm"); they are
    replaced, so that their records too print above the live bar. Their informational
    chatter shows only when `level` is INFO or lower.
    """
    handler = _SafeHandler(
        console=console,
        level=level,
        show_time=False,
        show_path=level <= logging.DEBUG,
        markup=False,
        rich_tracebacks=False,
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, RichHandler)]:
        root.removeHandler(old)  # a second configuration (tests, notebooks) replaces the first
    root.addHandler(handler)
    # Only ever lowered: the handler filters, and a level someone set lower (pytest's
    # caplog, a notebook's own logging) keeps its records.
    if level < root.level:
        root.setLevel(level)
    for name in ENGINE_LOGGERS:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        # ray.init sets the "ray" logger to INFO again; the handler's level still filters.
        library.setLevel(level)
    for name in PER_REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else logging.WARNING)
    return handler
