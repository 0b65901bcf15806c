"""A stand-in for vLLM's ``LLMEngine`` (our own; vLLM needs a GPU and its weights).

It has the calls upstream's ``Qwen2LM.inference_wrapper`` makes: ``add_request`` then ``step()``
repeatedly, each step advancing EVERY request it holds by one token (continuous batching), so
requests share the engine the way they share vLLM's.
"""

from __future__ import annotations

from typing import Any


class StepEngine:
    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.requests: dict[str, list[Any]] = {}  # id -> [state, token, remaining, sampling]

    def add_request(self, request_id: str, lm_input: Any, max_tokens: int, sampling: int) -> None:
        self.requests[request_id] = [lm_input, self.llm._start_token(), max_tokens, sampling]

    def step(self) -> list[tuple[str, int | None, bool]]:
        outputs = []
        for request_id, request in list(self.requests.items()):
            state, token, remaining, sampling = request
            if remaining <= 0:
                outputs.append((request_id, None, True))
                del self.requests[request_id]
                continue
            state, token = self.llm._step(state, token, sampling)
            request[:3] = state, token, remaining - 1
            outputs.append((request_id, int(token), remaining - 1 == 0))
            if remaining - 1 == 0:
                del self.requests[request_id]
        return outputs
