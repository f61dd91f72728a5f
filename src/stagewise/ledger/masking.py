"""Paths cut out of a text the same way on every machine: the committed form of a free text.

A free text the ledger records (a run's cause or source, a reason, a decision's payload) may
hold paths of the machine that wrote it. An audit bundle shows it with every absolute path cut
to `<path>/<file name>`; the chain commits to the hash of that masked form as well as to the
original, so a bundle proves the text it shows without the original leaving the machine, and
without a map from shown to committed text that a forger could rewrite. The rules use nothing
of the machine (no study folder, user or host name): the same text masks the same everywhere.
"""

from __future__ import annotations

import re
from typing import Any

# A URL-encoded absolute path (%2Ftmp%2Fx), at least two components.
ENCODED = re.compile(r"(?:%2[Ff][A-Za-z0-9._~+\-]*){2,}")
FILE_URL = re.compile(r"file://(/[^\s\"'<>]*)")
# An absolute POSIX path with at least two components, not part of a word, URL or ratio
# ("d8/ar48", "4/4", "https://..." stay), a Windows drive path, or a ~/ path.
POSIX = re.compile(r"(?<![\w.:>~/\\-])/(?:[^\s/\"'<>|,;:()\[\]{}=]+/)+([^\s/\"'<>|,;:()\[\]{}=]*)")
WINDOWS = re.compile(r"(?<![\w])[A-Za-z]:[\\/](?:[^\s\"'<>|,;\\/]+[\\/])*([^\s\"'<>|,;\\/]*)")
TILDE = re.compile(r"(?<![\w])~[\\/](?:[^\s\"'<>|,;\\/]+[\\/])*([^\s\"'<>|,;\\/]*)")


def _last_component(encoded: str) -> str:
    return encoded.rsplit("%2F", 1)[-1].rsplit("%2f", 1)[-1]


def mask_paths(text: str) -> str:
    """`text` with every absolute path cut to `<path>/<file name>` (idempotent)."""
    text = FILE_URL.sub(lambda m: "file://<path>/" + m.group(1).rsplit("/", 1)[-1], text)
    text = ENCODED.sub(lambda m: "<path>%2F" + _last_component(m.group(0)), text)
    text = POSIX.sub(lambda m: "<path>/" + m.group(1), text)
    text = WINDOWS.sub(lambda m: "<path>/" + m.group(1), text)
    return TILDE.sub(lambda m: "<path>/" + m.group(1), text)


def mask_value(value: Any) -> Any:
    """`mask_paths` on every string inside a JSON-like value (keys included)."""
    if isinstance(value, str):
        return mask_paths(value)
    if isinstance(value, dict):
        return {mask_paths(str(k)): mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v) for v in value]
    return value


# A committed text that names the machine or the user is shown as this marker: the sha256 of its
# masked form, which is what the chain committed to, so the record still proves and the name
# never leaves the machine. A marker proves nothing about the text but its hash.
WITHHELD = re.compile(r"<withheld sha256:([0-9a-f]{64})>")


def withheld(shown_sha256: str) -> str:
    return f"<withheld sha256:{shown_sha256}>"


def withheld_hash(value: Any) -> str | None:
    """The hash a withheld marker stands for, or None when `value` is no marker."""
    if isinstance(value, str):
        m = WITHHELD.fullmatch(value)
        if m:
            return m.group(1)
    return None
