"""Scrubbing: what leaves the machine carries no path, user name or host name of it.

Every string written into an audit bundle passes through `Scrubber.text`: paths inside the study
folder become `<study>/...`; any other absolute path (POSIX, Windows or ~/) is cut to
`<path>/<file name>` (URL-encoded ones too); a bare home folder becomes `<home>`; the user name
`<user>` and the machine's host name `<host>`, as whole tokens only (`vmcond`, `root-box` and a
host block named `linux-l40s` stay).

A study id (host block, condition, stage, gate) that *equals* the user or host name cannot become
`<host>`: that is not a valid id, and `[hosts.<host>]` is not TOML. Such a name is replaced by
an id-safe name instead (`scrubbed-host`, `scrubbed-user`), everywhere, so every file of a
bundle still agrees with every other; `renamed` maps each new id to the sha256 of the old one,
which is what `stagewise verify` needs to prove the renamed rows against the event chain.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# A URL-encoded absolute path (%2Ftmp%2Fx), at least two components.
_ENCODED = re.compile(r"(?:%2[Ff][A-Za-z0-9._~+\-]*){2,}")
_FILE_URL = re.compile(r"file://(/[^\s\"'<>]*)")
# What may touch a name and still leave it a whole token: anything but letters, digits, - and _.
_WORD = "A-Za-z0-9_\\-"
# An absolute POSIX path with at least two components, not part of a word, URL or ratio
# ("d8/ar48", "4/4", "https://..." stay), a Windows drive path, or a ~/ path.
_POSIX = re.compile(r"(?<![\w.:>~/\\-])/(?:[^\s/\"'<>|,;:()\[\]{}=]+/)+([^\s/\"'<>|,;:()\[\]{}=]*)")
_WINDOWS = re.compile(r"(?<![\w])[A-Za-z]:[\\/](?:[^\s\"'<>|,;\\/]+[\\/])*([^\s\"'<>|,;\\/]*)")
_TILDE = re.compile(r"(?<![\w])~[\\/](?:[^\s\"'<>|,;\\/]+[\\/])*([^\s\"'<>|,;\\/]*)")


def _token(word: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![{_WORD}]){re.escape(word)}(?![{_WORD}])")


def _last_component(encoded: str) -> str:
    return encoded.rsplit("%2F", 1)[-1].rsplit("%2f", 1)[-1]


class Scrubber:
    def __init__(
        self,
        roots: Iterable[Path | str] = (),
        extra_names: Iterable[str] = (),
        ids: Iterable[str] = (),
    ) -> None:
        prefixes: dict[str, str] = {}
        for root in roots:
            # Absolute forms only: a study opened as `demo` must not turn every "demo" into
            # `<study>` (its own name in study.toml included).
            for form in {str(Path(root).absolute()), str(Path(root).resolve())}:
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
        self.forbidden_names: list[tuple[re.Pattern[str], str]] = []
        self.renamed: dict[str, str] = {}  # new id -> sha256 of the id it replaced
        known = set(ids)
        for name, repl, safe in (
            (_user(), "<user>", "scrubbed-user"),
            (_host(), "<host>", "scrubbed-host"),
            *((n, "<name>", "scrubbed-name") for n in extra_names),
        ):
            if not name or len(name) < 2:
                continue
            if name in known:
                repl = safe
                n = 1
                while repl in known or repl in self.renamed:
                    n += 1
                    repl = f"{safe}-{n}"
                self.renamed[repl] = hashlib.sha256(name.encode("utf-8")).hexdigest()
            self.names.append((_token(name), repl))
            self.forbidden_names.append((_token(name), name))

    def text(self, value: str) -> str:
        for prefix, repl in self.prefixes:
            value = value.replace(prefix, repl)
        value = _FILE_URL.sub(lambda m: "file://<path>/" + m.group(1).rsplit("/", 1)[-1], value)
        value = _ENCODED.sub(lambda m: "<path>%2F" + _last_component(m.group(0)), value)
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
