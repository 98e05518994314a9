"""Throughput limit for bench/warm.py: the smallest ASGI app under the same server stack mist
uses (uvicorn + httptools + uvloop, one process), answering a fixed `{"hello": "world"}` to any
request after reading the body. No framework, no sandbox, no records: what a uvicorn-based
gateway cannot beat on this machine.

    <mist venv python> asgi_floor.py PORT
"""

import sys

import uvicorn

BODY = b'{"hello": "world"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
                lifespan="off", http="httptools", loop="uvloop")
