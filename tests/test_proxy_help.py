"""``llmwall proxy --help`` and the README's option table come from the addons' option declarations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mitmproxy.test import taddons

from llmwall import mitm_entry
from llmwall.cli.proxy_help import llmwall_options, markdown_table

ROOT = Path(__file__).resolve().parent.parent


def test_recorded_options_are_the_ones_mitmproxy_registers() -> None:
    recorded = {o.name: o.default for o in llmwall_options()}
    with taddons.context(*mitm_entry.addons) as tctx:
        registered = {name: tctx.options.default(name) for name in tctx.options.keys() if name.startswith("llmwall_")}
    assert recorded == registered


def test_readme_option_table_matches_the_declarations() -> None:
    expected = markdown_table(llmwall_options())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert expected in readme, f"update the table in README.md ('### Options') to:\n\n{expected}\n"


def test_proxy_help_lists_every_llmwall_option_with_its_default() -> None:
    res = subprocess.run(
        [str(Path(sys.executable).parent / "llmwall"), "proxy", "--help"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "--set" in res.stdout  # mitmdump's own options come first
    for opt in llmwall_options():
        assert f"  {opt.name}  (default: {opt.default_text})" in res.stdout
    assert "llmwall_models  (default: (empty))" in res.stdout and "shipped with llmwall" in res.stdout
