"""A small FastAPI app for the launcher's end-to-end tests (knows nothing about tracing)."""

import argparse

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
def health() -> dict:
    return {"ok": True}


@app.get("/synthesize/{voice}")
def synthesize(voice: str) -> dict:
    return {"voice": voice, "samples": 24000}


@app.get("/fail/{voice}")
def fail(voice: str) -> dict:
    raise RuntimeError("synthesis failed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
