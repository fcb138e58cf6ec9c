"""Rules reload on file change (watchfiles) or SIGHUP, without dropping a connection.

A reload that finds any error keeps the whole last good rule set live and reports the
errors; sessions pick up the new rules on their next event, and their widgets get the
new config (what to measure) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

from watchfiles import awatch

from ..core.checks import render_warnings, rule_warnings
from ..core.rules.campaign import RULE_FILE_SUFFIXES, load_rules
from ..core.rules.engine import RuleSet
from .guard import guard_all
from .hub import Hub

log = logging.getLogger("popin.rules")


def reload_rules(hub: Hub, folder: Path, geo_available: bool, starting: bool = False) -> bool:
    """Load the folder anew. At start, broken files are left out and the rest loads; on a
    reload, any error keeps the whole last good rule set live."""
    loaded = load_rules(folder)
    hub.rule_status.errors = [str(error) for error in loaded.errors]
    hub.rule_status.checked_at = time.time()
    hub.rule_status.files = loaded.files
    for error in loaded.errors:
        log.error("rule file error: %s; %s", error, "the file is left out" if starting
                  else "the last good rules stay live")
    if loaded.errors and not starting:
        hub.counts["rules.reload_failed"] += 1
        return False
    ruleset = RuleSet(loaded.rules, loaded.keywords, loaded.catalog)
    for warning in (rule_warnings(loaded.rules, geo_available, loaded.events)
                    + render_warnings(ruleset)):
        log.warning("%s", warning)
    hub.rules = ruleset
    hub.rule_status.loaded_at = hub.rule_status.checked_at
    hub.counts["rules.loaded" if starting else "rules.reloaded"] += 1
    log.info("loaded %d rules from %d files in %s", len(loaded.rules), len(loaded.files), folder)
    return True


async def watch_rules(hub: Hub, folder: Path, geo_available: bool, files: bool = True) -> None:
    """Reload on SIGHUP, and on every change to a rule file if `files`; runs until
    cancelled."""
    hangup = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Not in the main thread (tests), or no signals on this platform: file changes only.
    no_signals = contextlib.suppress(NotImplementedError, RuntimeError, ValueError)
    with no_signals:
        loop.add_signal_handler(signal.SIGHUP, hangup.set)

    async def on_signal() -> None:
        while True:
            await hangup.wait()
            hangup.clear()
            if reload_rules(hub, folder, geo_available):
                await guard_all(hub)

    signals = asyncio.create_task(on_signal())
    try:
        if not files:
            await asyncio.Future()  # signals only, until cancelled
        async for _changes in awatch(folder, debounce=200, step=50,
                                     watch_filter=lambda _change, path: path.endswith(
                                         RULE_FILE_SUFFIXES)):
            # A changed rule that was paused runs again as a new version.
            if reload_rules(hub, folder, geo_available):
                await guard_all(hub)
    finally:
        signals.cancel()
        with no_signals:
            loop.remove_signal_handler(signal.SIGHUP)
