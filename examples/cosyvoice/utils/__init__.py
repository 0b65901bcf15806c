"""Demo engine: cosyvoice.utils."""
