"""Scrubbing: what leaves the machine carries no path, user name or host name of it.

Every string written into an audit bundle passes through `Scrubber.text`: paths inside the study
folder become `<study>/...`; any other absolute path (POSIX, Windows or ~/) is cut to
`<path>/<file name>`; a bare home folder becomes `<home>`; the user name `<user>` and the
machine's host name `<host>` (whole tokens, so a host *block* named `linux-l40s` stays).
"""

from __future__ import annotations

import getpass
import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# An absolute POSIX path with at least two components, not part of a word, URL or ratio
# ("d8/ar48", "4/4", "https://..." stay), a Windows drive path, or a ~/ path.
_POSIX = re.compile(r"(?<![\w.:>~/\\-])/(?:[^\s/\"'<>|,;:()\[\]{}=]+/)+([^\s/\"'<>|,;:()\[\]{}=]*)")
_WINDOWS = re.compile(r"(?<![\w])[A-Za-z]:[\\/](?:[^\s\"'<>|,;\\/]+[\\/])*([^\s\"'<>|,;\\/]*)")
_TILDE = re.compile(r"(?<![\w])~[\\/](?:[^\s\"'<>|,;\\/]+[\\/])*([^\s\"'<>|,;\\/]*)")


def _token(word: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])")


class Scrubber:
    def __init__(self, roots: Iterable[Path | str] = (), extra_names: Iterable[str] = ()) -> None:
        prefixes: dict[str, str] = {}
        for root in roots:
            for form in {str(root), str(Path(root).resolve())}:
                if len(form) > 1:
                    prefixes[form.rstrip("/")] = "<study>"
        # Longest first: one study folder may sit inside another form of it.
        self.prefixes = sorted(prefixes.items(), key=lambda kv: -len(kv[0]))
        # Paths under the home folder are cut by the path rule; what is left of it goes here.
        home = os.path.expanduser("~")
        self.homes = (
            sorted({home, str(Path(home).resolve())}, key=len, reverse=True)
            if home and home not in ("/", "~")
            else []
        )
        self.names: list[tuple[re.Pattern[str], str]] = []
        self.forbidden: list[str] = [p for p, _ in self.prefixes] + self.homes
        for name, repl in (
            (_user(), "<user>"),
            (_host(), "<host>"),
            *((n, "<name>") for n in extra_names),
        ):
            if name and len(name) >= 2:
                self.names.append((_token(name), repl))
                self.forbidden.append(name)

    def text(self, value: str) -> str:
        for prefix, repl in self.prefixes:
            value = value.replace(prefix, repl)
        value = _POSIX.sub(lambda m: "<path>/" + m.group(1), value)
        value = _WINDOWS.sub(lambda m: "<path>/" + m.group(1), value)
        value = _TILDE.sub(lambda m: "<path>/" + m.group(1), value)
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

    def leaks(self, text: str) -> list[str]:
        """Forbidden strings still present in `text` (substring match)."""
        return [f for f in self.forbidden if f in text]


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
