"""Rules reload on file change (watchfiles) or SIGHUP, without dropping a connection.

Each site has its campaign folder. A reload that finds any error in a folder keeps that
folder's last good rules live and reports the errors; sessions pick up the new rules on
their next event, and their widgets get the new config (what to measure) at once.
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
from ..core.rules.schema import plural
from .guard import guard_all
from .hub import Hub, RuleStatus

log = logging.getLogger("popin.rules")


def reload_rules(hub: Hub, folders: dict[str, Path], geo_available: bool,
                 starting: bool = False, allow_http_hosts: tuple[str, ...] = ()) -> bool:
    """Load every site's campaign folder anew (`folders`: site key -> folder; sites may
    share one; `allow_http_hosts`: [webhooks] allow_http_hosts, which webhooks are judged
    by). At start, broken files are left out and the rest loads; on a reload, a
    folder with any error keeps its last good rules live, and the other folders reload."""
    by_folder: dict[Path, list[str]] = {}
    for site, folder in folders.items():
        by_folder.setdefault(folder, []).append(site)
    errors: list[str] = []
    files: list[str] = []
    fresh: dict[str, RuleSet] = {}
    now = time.time()
    for folder, sites in by_folder.items():
        loaded = load_rules(folder, allow_http_hosts)
        errors += [str(error) for error in loaded.errors]
        files += loaded.files
        for site in sites:
            status = hub.site_status.setdefault(site, RuleStatus(loaded_at=now))
            status.files, status.checked_at = loaded.files, now
            status.errors = [str(error) for error in loaded.errors]
            if starting or not loaded.errors:
                status.loaded_at = now
        for error in loaded.errors:
            log.error("rule file error: %s; %s", error, "the file is left out" if starting
                      else "the last good rules stay live")
        if loaded.errors and not starting:
            continue
        ruleset = RuleSet(loaded.rules, loaded.keywords, loaded.catalog)
        for warning in (rule_warnings(loaded.rules, geo_available, loaded.events)
                        + render_warnings(ruleset)):
            log.warning("%s", warning)
        fresh.update((site, ruleset) for site in sites)
        log.info("loaded %s from %s in %s for %s", plural(len(loaded.rules), "rule"),
                 plural(len(loaded.files), "file"), folder, ", ".join(sites))
    hub.rule_status.errors = errors
    hub.rule_status.checked_at = time.time()
    hub.rule_status.files = files
    if fresh:
        hub.set_rules(fresh)
        hub.rule_status.loaded_at = hub.rule_status.checked_at
    if errors and not starting:
        hub.counts["rules.reload_failed"] += 1
        return False
    hub.counts["rules.loaded" if starting else "rules.reloaded"] += 1
    return True


async def watch_rules(hub: Hub, folders: dict[str, Path], geo_available: bool,
                      files: bool = True, allow_http_hosts: tuple[str, ...] = ()) -> None:
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
            reload_rules(hub, folders, geo_available, allow_http_hosts=allow_http_hosts)
            await guard_all(hub)

    signals = asyncio.create_task(on_signal())
    try:
        if not files:
            await asyncio.Future()  # signals only, until cancelled
        watched = sorted({folder for folder in folders.values() if folder.is_dir()})
        if not watched:
            await asyncio.Future()
        async for _changes in awatch(*watched, debounce=200, step=50,
                                     watch_filter=lambda _change, path: path.endswith(
                                         RULE_FILE_SUFFIXES)):
            # A changed rule that was paused runs again as a new version.
            reload_rules(hub, folders, geo_available, allow_http_hosts=allow_http_hosts)
            await guard_all(hub)
    finally:
        signals.cancel()
        with no_signals:
            loop.remove_signal_handler(signal.SIGHUP)
