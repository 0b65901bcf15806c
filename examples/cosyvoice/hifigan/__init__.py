"""Demo engine: cosyvoice.hifigan."""
