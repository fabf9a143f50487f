"""Hot reload of rules.yaml: polled, so it works the same on every OS and inside containers.

Only a complete file is loaded: a change must hold still across two polls, an empty
file is never loaded, and a rule set with no enabled rules is loaded with a warning.
"""

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
        self._stat: tuple[int, int, int] | None = None  # the version that was last read
        self._seen: tuple[int, int, int] | None = None  # the version the last poll saw
        self._digest: bytes | None = None
        stat, data = self._read()
        self.current: RuleSet = self._parse(data)
        self._stat = self._seen = stat
        self._digest = hashlib.sha256(data).digest()

    def _read(self) -> tuple[tuple[int, int, int], bytes]:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
                st = os.fstat(fh.fileno())  # after reading: a write during the read shows here
        except OSError as exc:
            raise RulesError([RuleIssue(self.path, None, 1, 1, f"cannot read the rules file: {exc}")]) from None
        return _key(st), data

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
        """Reload if the file changed and has held still since the previous poll.

        Returns the load error (once per change), else None. A change is read only when
        two consecutive polls see the same inode, size and mtime, so a file caught half
        written (an editor saving, ``cp`` in progress) is never loaded; a rename into
        place is complete by construction and is picked up on the next poll.
        """
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._seen = None
            if self._stat is None:
                return None  # already reported
            self._stat = None
            return RulesError([RuleIssue(self.path, None, 1, 1, f"cannot read the rules file: {exc}")])
        stat = _key(st)
        if stat != self._seen:
            self._seen = stat
            return None  # changed since the last poll: wait until it holds still
        if stat == self._stat and time.time() - st.st_mtime_ns / 1e9 > _RACY_WINDOW_S:
            return None
        try:
            stat, data = self._read()
        except RulesError as exc:
            self._stat = self._seen = None
            return exc
        if stat != self._seen:  # written to while we read it
            self._seen = stat
            return None
        digest = hashlib.sha256(data).digest()
        self._stat = stat
        if digest == self._digest:
            return None
        self._digest = digest
        if not data.strip():
            return RulesError(
                [
                    RuleIssue(
                        self.path, None, 1, 1, "the rules file is empty (being written?); keeping the last good rules"
                    )
                ]
            )
        try:
            self.current = self._parse(data)
        except RulesError as exc:
            return exc
        if not any(rule.enabled for rule in self.current.rules):
            log.warning("rules: %s now has no enabled rules: requests are screened by nothing", self.path)
        return None


def _key(st: os.stat_result) -> tuple[int, int, int]:
    """What identifies one version of the file: inode (a rename changes it), mtime, size."""
    return (st.st_ino, st.st_mtime_ns, st.st_size)
