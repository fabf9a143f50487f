"""LLM provider formats: recognising LLM traffic and reading prompts out of provider request bodies."""
