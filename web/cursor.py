"""Resume cursors: an epoch plus the next offset of every partition of ``match-deltas``.

A cursor reads ``{epoch}.{o0}-{o1}-...-{oN}``: ``o_p`` is the first offset of
partition ``p`` the client has *not* seen. Every edge reads every partition of
the same topic, so a cursor issued by one edge resumes on any other. The epoch
names the incarnation of the topic; a cursor from another epoch, or with another
partition count, cannot be resumed and the client gets ``reset``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CURSOR_RE = re.compile(r"^([A-Za-z0-9_]{1,32})\.(\d{1,19}(?:-\d{1,19}){0,1023})$")


class CursorError(ValueError):
    """A cursor that is malformed (not merely old)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    epoch: str
    offsets: tuple[int, ...]

    def encode(self) -> str:
        return f"{self.epoch}." + "-".join(map(str, self.offsets))

    @classmethod
    def decode(cls, text: str) -> Cursor:
        m = _CURSOR_RE.match(text.strip())
        if not m:
            raise CursorError(f"malformed cursor {text[:80]!r}")
        return cls(m.group(1), tuple(int(x) for x in m.group(2).split("-")))

    def advanced(self, partition: int, offset: int) -> Cursor:
        offsets = list(self.offsets)
        offsets[partition] = offset + 1
        return Cursor(self.epoch, tuple(offsets))
