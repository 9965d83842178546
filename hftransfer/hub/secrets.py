"""Secrets never reach a card, a log or an uploaded file: tokens and token-like values are replaced."""

from __future__ import annotations

import re


REDACTED = "<redacted>"
_HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{20,}")
_SECRET_KEYS = (
    "token",
    "hf_token",
    "hub_token",
    "huggingface_token",
    "huggingface_hub_token",
    "hugging_face_hub_token",
    "api_token",
    "access_token",
    "auth_token",
    "password",
    "secret",
    "api_key",
)
_SECRET_KEY_PATTERN = "|".join(key.replace("_", "[_-]") for key in sorted(_SECRET_KEYS, key=len, reverse=True))
# `token=abc`, `hub.token: abc`, `"token": "abc"`, `--hub-token=abc`
# (keys match exactly, so `pad_token` is left alone) ...
_SECRET_ASSIGN_RE = re.compile(
    rf"(?i)(?<![\w-])(?P<key>(?:[\w-]+\.)*-{{0,2}}(?:{_SECRET_KEY_PATTERN})['\"]?)(?P<sep>\s*[:=]\s*)"
    r"(?P<quote>['\"]?)(?P<value>[^\s'\",}\]]+)(?P=quote)"
)
# ... and `--token abc` on a command line.
_SECRET_FLAG_RE = re.compile(
    rf"(?i)(?<![\w-])(?P<key>--(?:{_SECRET_KEY_PATTERN}))(?P<sep>\s+)(?P<value>[^\s'\"-][^\s'\"]*)"
)
_NOT_SECRET_VALUES = {"null", "none", "~", "true", "false", REDACTED}


def redact_secrets(text: str) -> str:
    """Replace Hugging Face tokens (`hf_...`) and values of token/password-like keys or flags with `<redacted>`."""
    text = _HF_TOKEN_RE.sub(REDACTED, text)

    def assign(match: re.Match) -> str:
        if match["value"].lower() in _NOT_SECRET_VALUES:
            return match[0]
        return f"{match['key']}{match['sep']}{match['quote']}{REDACTED}{match['quote']}"

    def flag(match: re.Match) -> str:
        return f"{match['key']}{match['sep']}{REDACTED}"

    return _SECRET_FLAG_RE.sub(flag, _SECRET_ASSIGN_RE.sub(assign, text))


def is_secret_key(key: str) -> bool:
    """Whether a config key (``hub.token``, ``api-key``...) names a secret whose value must not be shown."""
    return key.rsplit(".", 1)[-1].lower().replace("-", "_") in _SECRET_KEYS
