"""The report's HTML templates (``templates/``, package data) and the one place values are
escaped into them.

``string.Template`` is enough for a page without loops or conditions in its markup (Python
joins the repeated parts); a template engine (Jinja2 and MarkupSafe) would be the thin edge
client's first dependency for a few dozen small fragments. Every value
is HTML-escaped when it is filled in, unless it is ``Markup``: a filled template, or a trusted
file such as the style sheet. Fragment files hold named fragments, each from its
``<!--# name -->`` line to the next; a line break followed by indentation is dropped with
it, so a long fragment is written over several lines and still comes out as one.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources
from string import Template

_MARKER = re.compile(r"^<!--# (\w+) -->\n", re.MULTILINE)
_CONTINUED = re.compile(r"\n[ \t]+")


class Markup(str):
    """Text that is HTML already: filled in as it is, never escaped again."""


def _read(name: str) -> str:
    return resources.files("veil.review").joinpath("templates", name).read_text(encoding="utf-8")


@cache
def _fragments(file: str) -> dict[str, Template]:
    parts = _MARKER.split(_read(file))  # what precedes the first marker, then name, body...
    return {
        name: Template(_CONTINUED.sub("", body.rstrip("\n")))
        for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }


@cache
def _page(file: str) -> Template:
    return Template(_read(file))


@cache
def asset(file: str) -> Markup:
    """A template file inserted whole and as it is (the style sheet)."""
    return Markup(_read(file))


def _escaped(values: dict[str, object]) -> dict[str, str]:
    return {
        key: value if isinstance(value, Markup) else html.escape(str(value), quote=True)
        for key, value in values.items()
    }


class Fragments:
    """The named fragments of one fragment file: ``fragments(name, **values)`` is one of
    them filled in, its values escaped."""

    def __init__(self, file: str) -> None:
        self.file = file

    def __call__(self, name: str, /, **values: object) -> Markup:
        return Markup(_fragments(self.file)[name].substitute(_escaped(values)))


def fill_page(file: str, /, **values: object) -> Markup:
    """The whole template file ``file`` (a page), its values escaped."""
    return Markup(_page(file).substitute(_escaped(values)))


def join(parts: Iterable[Markup], separator: str = "") -> Markup:
    """Filled fragments one after the other (``separator`` is HTML too)."""
    return Markup(separator.join(parts))
