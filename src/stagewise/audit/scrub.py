"""Scrubbing: what leaves the machine carries no path, user name or host name of it.

Every string written into an audit bundle passes through `Scrubber.text`: any absolute path
(POSIX, Windows, ~/, URL-encoded, file://) is cut to `<path>/<file name>` (`ledger.masking`, the
same rule on every machine); a bare home folder becomes `<home>`; the user name `<user>` and the
machine's host name `<host>`, as whole tokens only (`vmcond`, `root-box` and a host block named
`linux-l40s` stay).

The texts the event chain commits to (a run's cause and source, reasons, payloads, frozen
rules) are shown masked only (`Scrubber.committed`): the chain commits to their masked form, so a
bundle proves what it shows; a user or host name written into one of them stays, and the bundle
command lists it as a leak.

Declared ids (host blocks, conditions, stages, gates) are never scrubbed: a host block named
like the machine (`vm`) or the user (`root`) keeps its name in every file, and the same word in
free text is left alone too, so scrubbing never changes what was decided.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from stagewise.ledger.integrity import canonical_json, sha256_text, text_hash
from stagewise.ledger.masking import mask_paths, mask_value, withheld

# What may touch a name and still leave it a whole token: anything but letters, digits, - and _.
_WORD = "A-Za-z0-9_\\-"


def _token(word: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![{_WORD}]){re.escape(word)}(?![{_WORD}])")


class Scrubber:
    def __init__(
        self,
        roots: Iterable[Path | str] = (),
        extra_names: Iterable[str] = (),
        ids: Iterable[str] = (),
    ) -> None:
        # The study folder in its absolute forms: never written (the path rule cuts it), and
        # listed as a leak should any text still hold it.
        forms = {
            form.rstrip("/")
            for root in roots
            for form in (str(Path(root).absolute()), str(Path(root).resolve()))
            if len(form) > 1
        }
        # Paths under the home folder are cut by the path rule; what is left of it goes here.
        home = os.path.expanduser("~")
        self.homes = (
            sorted({home, str(Path(home).resolve())}, key=len, reverse=True)
            if home and home not in ("/", "~")
            else []
        )
        self.names: list[tuple[re.Pattern[str], str]] = []
        self.forbidden: list[str] = sorted(forms, key=len, reverse=True) + self.homes
        self.forbidden_names: list[tuple[re.Pattern[str], str]] = []
        # Declared ids are public by declaration and decide what the study holds: a user or host
        # name that is also an id is neither scrubbed nor a leak.
        declared = set(ids)
        for name, repl in (
            (_user(), "<user>"),
            (_host(), "<host>"),
            *((n, "<name>") for n in extra_names),
        ):
            if not name or len(name) < 2 or name in declared:
                continue
            self.names.append((_token(name), repl))
            self.forbidden_names.append((_token(name), name))

    def text(self, value: str) -> str:
        value = mask_paths(value)
        for home in self.homes:
            value = value.replace(home, "<home>")
        for pattern, repl in self.names:
            value = pattern.sub(repl, value)
        return value

    def value(self, value: Any) -> Any:
        """Scrub every string inside a JSON-like value (keys included)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def committed(self, value: Any, *, json_context: bool = False) -> Any:
        """One field the chain commits to, as a bundle shows it: paths masked; a text that
        still names the machine or the user (or holds the home folder) is withheld whole, shown
        as the hash of its masked form (which the chain commits to). Structured values are
        masked only. `json_context`: the hash is of the JSON text (event fields)."""
        shown = mask_value(value)
        if isinstance(shown, str) and self.names_in(shown):
            return withheld(
                sha256_text(canonical_json(shown)) if json_context else text_hash(shown)
            )
        if json_context and not isinstance(shown, str) and self.names_in(canonical_json(shown)):
            return withheld(sha256_text(canonical_json(shown)))
        return shown

    def committed_record(self, record: Mapping[str, object]) -> dict[str, object]:
        return {k: self.committed(v) for k, v in record.items()}

    def names_in(self, text: str) -> bool:
        return any(h in text for h in self.homes) or any(
            pattern.search(text) for pattern, _ in self.names
        )

    def leaks(self, text: str) -> list[str]:
        """Forbidden paths still present in `text` (substring match) and user or host names
        (whole tokens: `vmcond` does not leak the host `vm`)."""
        found = [f for f in self.forbidden if f in text]
        return found + [name for pattern, name in self.forbidden_names if pattern.search(text)]


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (some containers)
        return os.environ.get("USER", "")


def _host() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return ""
