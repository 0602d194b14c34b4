"""The error type every config entry point raises, and the path notation issues use.

An issue is addressed the way a user reads the file: ``FILE:LINE: PATH: MESSAGE``, with PATH in
``listeners[0].routes[1].match.path_regex`` notation. The engine reports its own findings in the
same notation, so :func:`parse_path` turns either side's path back into segments for line lookup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# A path segment: a mapping key (field or header name) or a list index.
Segment = str | int
Path = tuple[Segment, ...]

# Keys that can be written bare after a dot; anything else (a header name with a dot, say)
# is quoted in brackets so the path stays unambiguous.
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_SEGMENT = re.compile(r'\.?([A-Za-z0-9_-]+)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]')


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in one place of one config source."""

    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config could not be loaded; ``issues`` lists every problem found, in document order."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        # Sort by line so the report reads top to bottom like the file; issues without a line
        # (dict input, file-level problems) keep their relative order at the end.
        ordered = sorted(issues, key=lambda i: (i.line is None, i.line or 0))
        if not ordered:
            raise ValueError("ConfigError needs at least one issue")
        self.issues: list[ConfigIssue] = ordered
        # args holds the issues themselves so the error survives pickling (multiprocessing).
        super().__init__(ordered)

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)


def format_path(path: Sequence[Segment]) -> str:
    """Render segments as ``listeners[0].match.headers.x-channel``; ``()`` is the root ``""``."""
    out: list[str] = []
    for seg in path:
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        elif _BARE_KEY.match(seg):
            out.append(f".{seg}" if out else seg)
        else:
            quoted = seg.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'["{quoted}"]')
    return "".join(out)


def parse_path(text: str) -> Path:
    """Inverse of :func:`format_path`. Unparseable tails are dropped: a shorter path still
    finds a useful line (the nearest enclosing node)."""
    segs: list[Segment] = []
    pos = 0
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        if m is None or m.end() == pos:
            break
        key, index, quoted = m.groups()
        if key is not None:
            segs.append(key)
        elif index is not None:
            segs.append(int(index))
        else:
            segs.append(re.sub(r"\\(.)", r"\1", quoted))
        pos = m.end()
    return tuple(segs)
