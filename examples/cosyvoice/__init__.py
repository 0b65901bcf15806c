"""A tiny demo engine with CosyVoice's public Python API and pipeline shape (our own code).

It lives under upstream's module names (``cosyvoice.cli.cosyvoice``, ``cosyvoice.cli.frontend``,
``cosyvoice.cli.model``, ``cosyvoice.llm.llm``, ``cosyvoice.flow.flow``,
``cosyvoice.hifigan.generator``) so that the same stage map traces it and the real CosyVoice.
The networks are tiny and randomly initialised: the audio is noise-like, but it is a real
waveform at the model's sample rate whose length follows the text, produced by the same stages
(frontend -> LLM job in a worker thread -> flow -> vocoder, streaming by token hops).
"""
