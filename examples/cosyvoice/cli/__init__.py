"""Demo engine: cosyvoice.cli."""
