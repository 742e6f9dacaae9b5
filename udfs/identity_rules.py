"""Blocked identifier values: the default list of junk ids, regex patterns, quoted forms.

Why a list by default: SDKs and integrations send placeholder ids ("guest", "undefined",
"[object Object]", the string "null" in quotes) when a real id is missing. Each one, taken as
an identifier, merges every person who ever sent it into one profile. PostHog documents the
ids it refuses to merge on; tidemark ships that list (plus a few placeholders seen in real
SDK traffic) as the default, configurable and removable (`identity.rules.blocked_defaults`).

Kept apart from udfs/identity.py so the resolver module stays about resolution.
"""

from __future__ import annotations

import re
from typing import Any

#: PostHog's documented illegal distinct ids ("How to identify users: illegal distinct ids").
#: Compared case-insensitively, so "NULL" and "Guest" are refused too.
POSTHOG_ILLEGAL_IDS = (
    "anonymous",
    "guest",
    "distinctid",
    "distinct_id",
    "id",
    "not_authenticated",
    "email",
    "undefined",
    "true",
    "false",
    "[object Object]",
    "NaN",
    "None",
    "none",
    "null",
    "0",
)
#: Placeholders tidemark refused before adopting PostHog's list; kept so upgrading blocks no
#: less than before.
TIDEMARK_EXTRA_BLOCKED = ("", "-1", "nil", "n/a", "unknown")
DEFAULT_BLOCKED = frozenset(v.lower() for v in POSTHOG_ILLEGAL_IDS + TIDEMARK_EXTRA_BLOCKED)
_QUOTES = ("'", '"')


def unquoted(value: str) -> str:
    """The value without one pair of matching surrounding quotes ("'null'" -> "null").

    Why: a client that stringifies an already-quoted JSON value sends '"undefined"'; the quote
    marks must not turn a junk id into an accepted one.
    """
    if len(value) >= 2 and value[0] == value[-1] and value[0] in _QUOTES:
        return value[1:-1].strip()
    return value


def is_blocked(value: str, blocked: frozenset[str], patterns: tuple[re.Pattern[str], ...]) -> bool:
    """Whether a normalized value is refused as an identifier.

    Refused: a listed value (case-insensitive) bare or in quotes, a value made only of zeros
    and dashes (all-zero UUIDs), or a value a pattern matches in full (case-sensitive unless
    the pattern says `(?i)`). Patterns see the value as normalized, quotes included.
    """
    for candidate in (value, unquoted(value)):
        if not candidate.strip("0-") or candidate.lower() in blocked:
            return True
    return any(p.fullmatch(value) for p in patterns)


def compile_patterns(value: Any, key: str) -> tuple[re.Pattern[str], ...]:
    """Compile `blocked_patterns`; a bad regex fails at load time naming its index."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(
            f"{key}: must be a list of regular expressions, got {type(value).__name__}"
        )
    compiled = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ValueError(f"{key}[{i}]: must be a non-empty string, got {item!r}")
        try:
            compiled.append(re.compile(item))
        except re.error as exc:
            raise ValueError(f"{key}[{i}]: invalid regular expression {item!r}: {exc}") from exc
    return tuple(compiled)
