"""The one rule for hub repo ids (models and datasets): ``name`` or ``namespace/name``."""

from __future__ import annotations

import re


# Letters, digits, '-', '_', '.'; each part starts with a letter or digit. The hub also refuses '..' and > 96 chars.
REPO_ID_RE = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
MAX_REPO_ID_LENGTH = 96


def is_repo_id(text: object, namespaced: bool = False) -> bool:
    """Whether ``text`` is a valid hub repo id; ``namespaced=True`` also requires the ``namespace/`` part."""
    if not isinstance(text, str) or not REPO_ID_RE.match(text):
        return False
    if ".." in text or len(text) > MAX_REPO_ID_LENGTH:
        return False
    return "/" in text or not namespaced
