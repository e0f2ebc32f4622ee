"""The report's words: numbers as a person reads them, and text with emphasis as typed data (no HTML).

A :data:`Rich` text is a sequence of :class:`Span`; the template marks a span bold or as code and escapes
its text, so nothing here writes markup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

#: how a span is shown: plain text, bold (the answer), or code (something to type)
Style = Literal["plain", "bold", "code"]


@dataclass(frozen=True)
class Span:
    text: str
    style: Style = "plain"


#: a sentence or paragraph with emphasis
Rich = tuple[Span, ...]


def plain(text: str) -> Span:
    return Span(text)


def bold(text: str) -> Span:
    return Span(text, "bold")


def code(text: str) -> Span:
    return Span(text, "code")


def as_text(rich: Rich) -> str:
    """The visible text, without emphasis."""
    return "".join(s.text for s in rich)


def finite(*v: object) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)


def pct(v: object, digits: int = 1) -> str:
    """0.7881 -> '78.8%'; '-' when missing."""
    return f"{100 * v:.{digits}f}%" if isinstance(v, (int, float)) and finite(v) else "-"


def pct_ci(v: object, lo: object = None, hi: object = None) -> str:
    """'78.8% (74.2–82.8)': the value and its 95% interval in percent, where the interval is known."""
    if not finite(v):
        return "-"
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and finite(lo, hi):
        return f"{pct(v)} ({100 * lo:.1f}–{100 * hi:.1f})"
    return pct(v)


def pts(v: object) -> str:
    """A difference of accuracies in percentage points: 0.181 -> '18.1 pts'."""
    return f"{100 * v:.1f} pts" if isinstance(v, (int, float)) and finite(v) else "-"


def plural(n: object, word: str = "round") -> str:
    """'1 round', '3 rounds'."""
    return f"{n} {word}{'s' if n != 1 else ''}"


def knobs(cond: dict[str, float]) -> str:
    """'resonance_hz 3500, noise 0.1'."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in cond.items())


def words(v: object) -> str:
    """A fact's value for a person: dicts as 'a 3, b 2', floats rounded, None as '-'."""
    if isinstance(v, dict):
        if not v:
            return "none"
        return ", ".join(f"{str(k).replace('_', ' ')} {words(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(words(x) for x in v) if v else "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)
