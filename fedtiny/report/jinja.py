"""The report's templates (fedtiny/report/templates/*.j2): one jinja2 environment with autoescape on, so every
name from a scenario or the user's data is escaped; markup is written in the templates only."""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from fedtiny.report.words import Rich


def nobreak(value: object) -> Markup:
    """A cell's text, escaped, where an interval such as 74.2–82.8 never breaks (a word joiner after the dash)."""
    return Markup(str(escape(str(value))).replace("–", "–&#8288;"))


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("fedtiny.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["nobreak"] = nobreak
    return env


def render(template: str, **context: object) -> str:
    """A template of fedtiny/report/templates rendered with ``context``."""
    return environment().get_template(template).render(**context)


def rich_html(text: Rich) -> str:
    """A :data:`~fedtiny.report.words.Rich` text as HTML (the ``rich`` macro of macros.j2)."""
    return str(environment().get_template("macros.j2").module.rich(text))  # type: ignore[attr-defined]
