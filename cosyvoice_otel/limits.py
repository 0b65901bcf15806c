"""The seed's input limits, parsed in one place (light: the launcher imports it at start)."""

from __future__ import annotations

DEFAULT_TEXT_CHARS = 200
DEFAULT_PROMPT_SECONDS = 15.0


def parse_input_limits(text: str) -> tuple[int, float]:
    """'on' (200 characters, 15 s of prompt audio), 'off' (no limits) or 'text=N,audio=S'.

    Returns (max text characters, max prompt seconds); 0 means no limit. ValueError names the
    problem."""
    value = text.strip().lower()
    if value in ("", "on", "default"):
        return DEFAULT_TEXT_CHARS, DEFAULT_PROMPT_SECONDS
    if value in ("off", "none"):
        return 0, 0.0
    limits = {"text": float(DEFAULT_TEXT_CHARS), "audio": DEFAULT_PROMPT_SECONDS}
    for item in value.split(","):
        key, sep, number = (part.strip() for part in item.partition("="))
        if not sep or key not in limits:
            raise ValueError(f"expected on, off or text=N,audio=SECONDS, got {text!r}")
        try:
            limits[key] = float(number)
        except ValueError:
            raise ValueError(f"expected a number for {key}, got {number!r}") from None
        if limits[key] < 0:
            raise ValueError(f"the {key} limit must not be negative, got {number!r}")
    return int(limits["text"]), limits["audio"]
