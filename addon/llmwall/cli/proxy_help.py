"""``llmwall proxy --help``: the llmwall options, read from the addons' own declarations.

The options are whatever the addons of ``mitm_entry`` declare in ``load()``; this module
records those declarations instead of keeping a second list, so the help and the README's
option table (a test compares it with :func:`markdown_table`) cannot drift from the code.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

#: Shown for an option whose default is empty.
EMPTY = "(empty)"
NONE = "none"


@dataclass(frozen=True)
class Option:
    """One declared option: name, default and help text."""

    name: str
    default: object
    help: str

    @property
    def default_text(self) -> str:
        if self.default is None or (isinstance(self.default, Sequence) and not self.default):
            return EMPTY if self.default == "" else NONE
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, (list, tuple)):
            return ", ".join(map(str, self.default))
        return str(self.default)


class _Recorder:
    """Stands in for mitmproxy's ``Loader``: keeps what ``load()`` declares."""

    def __init__(self) -> None:
        self.options: list[Option] = []

    def add_option(self, name: str, typespec: object, default: object, help: str, choices: object = None) -> None:
        self.options.append(Option(name, default, " ".join(help.split())))

    def add_command(self, *args: object, **kwargs: object) -> None:
        """Commands are not options."""


def llmwall_options() -> list[Option]:
    """Every option the llmwall addons declare, in declaration order."""
    from llmwall import mitm_entry

    recorder = _Recorder()
    for addon in mitm_entry.addons:
        if hasattr(addon, "load"):
            addon.load(recorder)
    return recorder.options


def help_text(options: list[Option]) -> str:
    """The llmwall section of ``llmwall proxy --help``."""
    lines = [
        "llmwall options (set with --set NAME=VALUE; they also appear in mitmweb's and mitmproxy's option editors):",
        "",
    ]
    for opt in options:
        lines.append(f"  {opt.name}  (default: {opt.default_text})")
        lines.extend(textwrap.wrap(opt.help, width=96, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


def markdown_table(options: list[Option]) -> str:
    """The README's option table."""
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for opt in options:
        default = opt.default_text if opt.default_text in (EMPTY, NONE) else f"`{opt.default_text}`"
        rows.append(f"| `{opt.name}` | {default} | {opt.help.replace('|', '\\|')} |")
    return "\n".join(rows)
