"""The browser demo: a mock OpenAI-compatible LLM with a chat page, and the launcher that runs it behind llmwall."""
