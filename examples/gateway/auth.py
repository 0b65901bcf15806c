"""An auth service for Traefik's forwardAuth in front of CosyVoice (``gateway-config --auth``).

    cosyvoice-traced run --service-name auth -- python examples/gateway/auth.py \
        --port 9000 --tokens-file /etc/cosyvoice/tokens

Traefik asks ``GET /check`` with the client's headers before it proxies a request. A request
passes (200) when it carries ``Authorization: Bearer TOKEN`` or ``X-API-Key: TOKEN`` with a
token listed in ``--tokens-file`` (one per line; ``#`` comments) or in ``AUTH_TOKENS``
(comma-separated); 401 when it carries no credential, 403 when the credential is not known.
Tokens are compared in constant time and never logged; started under ``cosyvoice-traced run``
its own span joins the request's trace, and no header of it is recorded (the tracer records
none by default, and redaction drops credential-looking values).
"""

import argparse
import hmac
import os

import uvicorn
from fastapi import FastAPI, Request, Response

app = FastAPI()
TOKENS: list[bytes] = []


def load_tokens(path: str | None) -> list[bytes]:
    tokens = [t.strip() for t in os.environ.get("AUTH_TOKENS", "").split(",") if t.strip()]
    if path:
        with open(path, encoding="utf-8") as f:
            tokens += [line.strip() for line in f
                       if line.strip() and not line.lstrip().startswith("#")]
    return [t.encode() for t in tokens]


def presented(request: Request) -> bytes | None:
    """The credential the client sent, if any (a bearer token or an API key)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip().encode()
    key = request.headers.get("x-api-key", "").strip()
    return key.encode() if key else None


@app.get("/check")
def check(request: Request) -> Response:
    credential = presented(request)
    if credential is None:
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
    # every token compared, whatever matched: the time says nothing about which one is close
    known = False
    for token in TOKENS:
        known |= hmac.compare_digest(credential, token)
    return Response(status_code=200 if known else 403)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tokens-file", default=None)
    args = parser.parse_args()
    TOKENS[:] = load_tokens(args.tokens_file)
    if not TOKENS:
        parser.error("no tokens: give --tokens-file or AUTH_TOKENS (every request would be 403)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
