"""The parts of a model card that hftransfer writes: each sits between ``<!-- hftransfer:begin NAME -->`` and
``<!-- hftransfer:end NAME -->``, so re-rendering replaces them and keeps the user's own text. The marker format lives
here alone (the Jinja template writes the same markers)."""

from __future__ import annotations

import re

from hftransfer.errors import ModelCardError


MARKER_PREFIX = "<!-- hftransfer:"
_NAME = r"[\w.-]+"
_SECTION_RE = re.compile(rf"{re.escape(MARKER_PREFIX)}begin (?P<name>{_NAME}) -->.*?"
                         rf"{re.escape(MARKER_PREFIX)}end (?P=name) -->", re.S)
_MARKER_RE = re.compile(rf"{re.escape(MARKER_PREFIX)}(?P<kind>begin|end) (?P<name>{_NAME}) -->")
_TAGS_RE = re.compile(rf"{re.escape(MARKER_PREFIX)}tags (?P<tags>[^>]*?) -->")


def marker(kind: str, name: str) -> str:
    """``<!-- hftransfer:begin NAME -->`` (``kind`` "begin") or ``<!-- hftransfer:end NAME -->`` (``kind`` "end")."""
    return f"{MARKER_PREFIX}{kind} {name} -->"


def has_sections(text: str) -> bool:
    """Whether ``text`` opens a marked section (a card hftransfer manages, not a hand-written one)."""
    return f"{MARKER_PREFIX}begin " in text


def generated_tags(text: str) -> list[str]:
    """The tags the previous render added (recorded in the card as ``<!-- hftransfer:tags a,b -->``)."""
    found = _TAGS_RE.search(text)
    return found["tags"].split(",") if found else []


def card_sections(text: str, where: str) -> dict[str, str]:
    """`{name: whole marked block}`; raises on unbalanced or repeated markers so nothing is silently dropped."""
    fix = "Restore the missing marker, or delete both markers to stop hftransfer from managing that section."
    open_name: str | None = None
    for match in _MARKER_RE.finditer(text):
        if match["kind"] == "begin":
            if open_name is not None:
                raise ModelCardError(
                    f"{where}: section '{open_name}' has no '{marker('end', open_name)}' marker before "
                    f"section '{match['name']}' begins. {fix}"
                )
            open_name = match["name"]
        elif open_name != match["name"]:
            raise ModelCardError(
                f"{where}: '{marker('end', match['name'])}' has no matching begin marker. {fix}"
            )
        else:
            open_name = None
    if open_name is not None:
        raise ModelCardError(
            f"{where}: section '{open_name}' has no '{marker('end', open_name)}' marker. {fix}"
        )
    sections: dict[str, str] = {}
    for match in _SECTION_RE.finditer(text):
        if match["name"] in sections:
            raise ModelCardError(
                f"{where}: section '{match['name']}' appears twice. Delete one copy, markers included."
            )
        sections[match["name"]] = match[0]
    return sections


def replace_sections(text: str, sections: dict[str, str]) -> str:
    """``text`` with each marked section that ``sections`` has (a whole block, markers included) replaced."""
    return _SECTION_RE.sub(lambda m: sections.get(m["name"], m[0]), text)


def put_section(text: str, name: str, markdown: str) -> str:
    """``text`` with ``markdown`` as its section ``name``: replacing an earlier one, else appended."""
    begin, end = marker("begin", name), marker("end", name)
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text and end in text and text.index(begin) < text.index(end):
        return text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    return text.rstrip("\n") + ("\n\n" if text.strip() else "") + block + "\n"
