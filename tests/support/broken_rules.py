"""A mitmdump script for tests: makes llmwall's rule evaluation raise, quoting the prompt.

It stands in for any bug inside llmwall, to show that an internal error neither breaks
the flow nor puts the prompt into the log.
"""

from mitmproxy import ctx


class BrokenRuleSet:
    fields = frozenset({"cf.llm.prompt.token_count"})
    custom_topics: dict[str, str] = {}

    def evaluate(self, values):
        raise RuntimeError(f"bug while reading {values}")


class BrokenWatcher:
    current = BrokenRuleSet()

    def poll(self):
        return None


class BreakRules:
    def running(self) -> None:
        ctx.master.addons.get("llmwall").rules = BrokenWatcher()


addons = [BreakRules()]
