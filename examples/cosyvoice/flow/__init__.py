"""Demo engine: cosyvoice.flow."""
