"""Demo engine: cosyvoice.llm."""
