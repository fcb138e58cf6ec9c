"""The baseline for bench/sockets.py: a bare `websockets` server that does the least a
server of this kind can do. It parses every message with orjson and answers one message
in ten (after the first, the greeting) with a payload of about 300 bytes, the size of a
pop-in. Compression off, uvloop, as popin runs.

    python bench/bare_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, serve

REPLY = orjson.dumps({"type": "show", "id": "0123456789abcdef.1", "rule": "bench-ping",
                      "kind": "popin", "placement": "corner",
                      "html": "<div class=card><h2>Bench</h2><p>" + "x" * 170 + "</p></div>"})


async def handler(websocket: ServerConnection) -> None:
    count = -1  # the first message is the greeting
    async for message in websocket:
        orjson.loads(message)
        count += 1
        if count and count % 10 == 0:
            await websocket.send(REPLY.decode())


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=16 * 1024,
                     backlog=4096):
        print("ready", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
