"""Reading a JSON-lines file that another process is still appending to (stdlib only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class Tail:
    """Complete JSON lines appended to a file since the last call: a line still being written waits for its
    newline; a line that is not JSON is skipped. A missing file has no records yet."""

    def __init__(self, path: Path) -> None:
        self.path, self.pos = path, 0

    def records(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.pos)
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self.pos += end
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out
