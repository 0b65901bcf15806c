"""A small FastAPI app for the launcher's end-to-end tests (knows nothing about tracing but the
public stage API, a no-op when the app is not traced)."""

import argparse

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

import cosyvoice_otel

app = FastAPI()


class Rewrite(BaseModel):
    text: str


@app.get("/health")
def health() -> dict:
    return {"ok": True}


@app.get("/synthesize/{voice}")
def synthesize(voice: str) -> dict:
    return {"voice": voice, "samples": 24000}


@app.get("/fail/{voice}")
def fail(voice: str) -> dict:
    raise RuntimeError("synthesis failed")


@app.post("/rewrite")
def rewrite(body: Rewrite) -> dict:
    """A fork's step that fails BEFORE any engine stage, misusing the API the ways issue 30
    found: the text as bytes, in a mixed list and in a mapping among the figures, the reason
    recorded then an exception raised quoting the text."""
    with cosyvoice_otel.stage("dialect_rewrite"):
        cosyvoice_otel.fail("rewrite_failed", "no rewrite", raw=body.text.encode(),
                            parts=[1, body.text], meta={"text": body.text})
        raise ValueError(f"cannot rewrite {body.text!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
