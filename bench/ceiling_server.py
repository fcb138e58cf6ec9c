"""What popin's rules could cost at best, for bench/sockets.py: the bare `websockets`
server of bench/bare_server.py, with popin's wire protocol and session (engine, caps,
rendering) on every message, and nothing else: no store, no statistics, no outbox, no
acknowledgements, no ASGI. Not a server anyone should run; a ceiling to measure against.

    python bench/ceiling_server.py PORT RULES_FOLDER
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import uvloop
from websockets.asyncio.server import ServerConnection, serve

from popin.core.rules.campaign import load_rules
from popin.core.rules.engine import RuleSet
from popin.core.session import Session
from popin.core.site import Site
from popin.core.visitor.agent import agent_of
from popin.core.visitor.facts import Facts
from popin.core.visitor.profile import Profile
from popin.core.wire.events import Hello
from popin.core.wire.protocol import ProtocolError, encode, messages_of, parse

# As bench/sockets.py configures popin's site.
SITE = Site("bench", fatigue_per_session=2, fatigue_per_day=3)


def handler_for(rules: RuleSet):  # type: ignore[no-untyped-def]
    async def handler(websocket: ServerConnection) -> None:
        session: Session | None = None
        async for frame in websocket:
            for item in messages_of(frame):
                try:
                    message = parse(item)
                except ProtocolError as error:
                    await websocket.send(encode(error.frame()))
                    continue
                if session is None:
                    assert isinstance(message, Hello)
                    profile = Profile(visitor=message.visitor)
                    session = Session(SITE.key, message.session, profile,
                                      Facts(profile, SITE, agent_of(""), now=time.time()))
                    result = session.begin(message, rules, time.time())
                else:
                    result = session.handle(message, rules, time.time())
                for push in result.messages:
                    await websocket.send(encode(push))

    return handler


async def main(port: int, folder: Path) -> None:
    loaded = load_rules(folder)
    rules = RuleSet(loaded.rules, loaded.keywords, loaded.catalog)
    async with serve(handler_for(rules), "127.0.0.1", port, compression=None,
                     max_size=16 * 1024, backlog=4096):
        print("ready", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), Path(sys.argv[2])))
