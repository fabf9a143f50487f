"""Hot reload of rules.yaml: polled, so it works the same on every OS and inside containers."""

from __future__ import annotations

import hashlib
import logging
import os
import time

from llmwall.rules.errors import RuleIssue, RulesError
from llmwall.rules.ruleset import RuleSet, parse_rules

log = logging.getLogger(__name__)

#: A file modified this recently is re-read even if its stat looks unchanged, because two
#: writes within one timestamp tick can leave mtime and size identical.
_RACY_WINDOW_S = 2.0


class RulesWatcher:
    """Keeps ``current`` in step with a rules file; a bad edit keeps the last good rule set."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._stat: tuple[int, int] | None = None
        self._digest: bytes | None = None
        stat, data = self._read()
        self.current: RuleSet = self._parse(data)
        self._stat, self._digest = stat, hashlib.sha256(data).digest()

    def _read(self) -> tuple[tuple[int, int], bytes]:
        try:
            st = os.stat(self.path)
            with open(self.path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise RulesError([RuleIssue(self.path, None, 1, 1, f"cannot read the rules file: {exc}")]) from None
        return (st.st_mtime_ns, st.st_size), data

    def _parse(self, data: bytes) -> RuleSet:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RulesError([RuleIssue(self.path, None, 1, 1, f"the rules file is not UTF-8: {exc}")]) from None
        try:
            ruleset = parse_rules(text, self.path)
        except RulesError:
            raise
        except Exception as exc:  # a loader bug must not end hot reload; keep the last good rules
            log.exception("rules: internal error while loading %s", self.path)
            raise RulesError([RuleIssue(self.path, None, 1, 1, f"internal error while loading: {exc!r}")]) from None
        return ruleset

    def poll(self) -> RulesError | None:
        """Reload if the file changed. Returns the load error (once per change), else None."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._stat is None:
                return None  # already reported
            self._stat = None
            return RulesError([RuleIssue(self.path, None, 1, 1, f"cannot read the rules file: {exc}")])
        stat = (st.st_mtime_ns, st.st_size)
        if stat == self._stat and time.time() - st.st_mtime_ns / 1e9 > _RACY_WINDOW_S:
            return None
        try:
            stat, data = self._read()
        except RulesError as exc:
            self._stat = None
            return exc
        digest = hashlib.sha256(data).digest()
        self._stat = stat
        if digest == self._digest:
            return None
        self._digest = digest
        try:
            self.current = self._parse(data)
        except RulesError as exc:
            return exc
        return None
