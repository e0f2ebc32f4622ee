"""Reading a JSON-lines file that another process is still appending to (stdlib only)."""

from __future__ import annotations

import json
from pathlib import Path


class Tail:
    """Complete JSON lines appended to a file since the last call: a line still being written waits for its
    newline; a line that is not a JSON object is skipped. A missing file has no records yet."""

    def __init__(self, path: Path) -> None:
        self.path, self.pos = path, 0

    def records(self) -> list[dict[str, object]]:
        """The JSON objects of the complete lines appended since the last call (readers cast them to the
        TypedDict of their file's records)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.pos)
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self.pos += end
        out: list[dict[str, object]] = []
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out
