"""Server processes under benchmark: a bare FastAPI endpoint (baseline) and the receiver."""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Request, Response


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.post("/webhooks/stripe")
    async def receive(request: Request) -> Response:
        await request.body()
        return Response(b'{"received":true,"duplicate":false}', media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["bare", "receiver"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.kind == "bare":
        app = bare_app()
    else:
        from service.app import create_app

        app = create_app()  # DATABASE_URL / STRIPE_WEBHOOK_SECRETS from the environment
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
