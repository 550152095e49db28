# -*- test-case-name: tests.test_logging -*-
"""
Peer-supplied text in log lines, made safe to write: L{bounded} truncates and
escapes one value; L{SafeLogger} applies it to every field of every event it
emits (and to a format string that is too long to be ours), so a user name,
client version, request name or disconnect description from the network is at
most L{MAX_CHARS} printable characters plus a marker in any log line.

Why here and not in an observer: twistd owns the log file's observer, and the
access log is written by an observer of our own; one helper at the emitting
side bounds both. Non-printable characters become C{\\xNN} (or C{\\uNNNN}),
a backslash becomes C{\\\\}, so a line cannot be split, coloured or forged by
what the peer sent. Numbers, booleans and C{None} pass through; a failure
(C{log_failure}) is left to the observer.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, LogLevel

__all__ = [
    "MAX_CHARS",
    "MAX_FORMAT_CHARS",
    "SafeLogger",
    "bounded",
    "boundedFields",
    "boundedFormat",
]

# Characters of a value kept, after escaping; then "...(N bytes)".
MAX_CHARS = 128
# A format string longer than this was built from peer input (Conch does so
# for an unsupported key type): it is bounded and escaped as a value.
MAX_FORMAT_CHARS = 512

_PLAIN = (int, float, bool, type(None))


def _escapeChar(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def bounded(value: Any, limit: int = MAX_CHARS) -> str:
    """
    C{value} as at most C{limit} printable characters; if more was given,
    followed by C{...(N bytes)} (N: the length of the whole value, UTF-8
    encoded for text). Bytes are read byte by byte: printable ASCII as
    itself, anything else as C{\\xNN}.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        total = len(raw)
        pieces = (
            chr(b) if 0x20 <= b < 0x7F and b != 0x5C else ("\\\\" if b == 0x5C else f"\\x{b:02x}")
            for b in raw[: limit + 1]
        )
    else:
        text = value if isinstance(value, str) else str(value)
        total = -1
        pieces = (_escapeChar(ch) for ch in text[: limit + 1])
    out: list[str] = []
    used = 0
    truncated = False
    for piece in pieces:
        if used + len(piece) > limit:
            truncated = True
            break
        out.append(piece)
        used += len(piece)
    if not truncated:
        return "".join(out)
    if total < 0:
        text = value if isinstance(value, str) else str(value)
        total = len(text.encode("utf-8", "surrogatepass"))
    return "".join(out) + f"...({total} bytes)"


def boundedFields(fields: dict[str, Any]) -> dict[str, Any]:
    """
    C{fields} with every value that is not a number, boolean, C{None} or a
    C{log_*} key replaced by L{bounded} text.
    """
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key.startswith("log_") or isinstance(value, _PLAIN):
            out[key] = value
        else:
            out[key] = bounded(value)
    return out


def boundedFormat(format: str | None) -> str | None:
    """
    A format string as a log line may carry it: ours are short and
    printable; a newline or control character in one (Conch's have some, and
    one embeds the peer's key type) is escaped, and one longer than
    L{MAX_FORMAT_CHARS} is truncated and kept as text (braces doubled).
    """
    if format is None:
        return None
    if len(format) > MAX_FORMAT_CHARS:
        return bounded(format, MAX_FORMAT_CHARS).replace("{", "{{").replace("}", "}}")
    if format.isprintable():
        return format
    return "".join(_escapeChar(ch) if ch != "\\" else ch for ch in format)


class SafeLogger(Logger):
    """
    A L{Logger} whose events carry only L{bounded} values. Use it wherever a
    field may come from the network; as a class attribute it binds like
    L{Logger} (namespace from the class, source the instance).
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        super().emit(level, boundedFormat(format), **boundedFields(kwargs))
