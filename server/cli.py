"""The `popin` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path

from . import __version__
from .config import ConfigError, Settings, load_settings
from .core.checks import render_warnings, rule_warnings
from .core.rules.campaign import Rule, load_rules
from .core.rules.engine import RuleSet
from .core.site import Site
from .stores.contract import Store


def _settings(args: argparse.Namespace) -> Settings:
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        # One line, and 2 as for any usage error: a config is fixed, not debugged.
        print(f"popin: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if getattr(args, "store", None):
        settings.store = args.store
    if getattr(args, "rules", None):
        settings.rules = args.rules
    if getattr(args, "geoip", None):
        settings.geoip = args.geoip
    if getattr(args, "no_reload", False):
        settings.reload = False
    return settings


def _site(args: argparse.Namespace, settings: Settings) -> Site | None:
    """The site named by --site, or None after saying which ones exist."""
    site = settings.sites.get(args.site)
    if site is None:
        print(f"unknown site {args.site!r}; configured: {', '.join(settings.sites)}",
              file=sys.stderr)
    return site


def _with_store(settings: Settings, work: Callable[[Store], Awaitable[int]]) -> int:
    """Open the configured store, run `work` on it, close it whatever happens."""
    import asyncio

    from .stores.backends import open_store

    async def run() -> int:
        store = open_store(settings.store)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .web.app import create_app, uvicorn_options
    from .web.limits import raise_open_files, socket_ceiling

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    settings = _settings(args)
    if settings.geoip is not None and not settings.geoip.is_file():
        raise SystemExit(f"popin: the geoip database {settings.geoip} does not exist")
    if not settings.rules.exists():
        print(f"popin: rules: {settings.rules} does not exist", file=sys.stderr)
        return 2
    problem = _store_problem(settings.store)
    if problem:
        print(f"popin: store: {problem}", file=sys.stderr)
        return 2
    open_files = raise_open_files()
    settings.limits = replace(settings.limits,
                              connections=socket_ceiling(settings.limits, open_files))
    app = create_app(settings)
    print(f"popin {__version__}: demo shop at http://{args.host}:{args.port}/demo/ "
          f"(store {settings.store}, rules {settings.rules}; at most "
          f"{settings.limits.connections} sockets, {open_files} open files)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                **uvicorn_options(settings))
    return 0


def _store_problem(url: str) -> str:
    """Why the store cannot be used, in one line; "" when it can (checked before the
    server starts, so a wrong URL or a dead Redis is a sentence, not a traceback)."""
    from .stores.backends import open_store

    async def check() -> None:
        store = open_store(url)
        try:
            await store.open()
        finally:
            await store.close()

    try:
        asyncio.run(check())
    except Exception as error:  # whatever the backend raises: said, not shown as a trace
        return f"{url} cannot be opened: {error}".replace("\n", " ")
    return ""


def rules_check(args: argparse.Namespace) -> int:
    path: Path = args.path or _settings(args).rules
    if not path.exists():
        print(f"{path}: no such file or folder", file=sys.stderr)
        return 2
    loaded = load_rules(path)
    for error in loaded.errors:
        print(error, file=sys.stderr)
    settings = _settings(args)
    warnings = rule_warnings(loaded.rules, settings.geoip is not None, loaded.events)
    warnings += render_warnings(RuleSet(loaded.rules, loaded.keywords, loaded.catalog))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for line in _paused_lines(settings, loaded.rules):
        print(line)
    good_files = len(set(loaded.files) - {error.file for error in loaded.errors})
    print(f"{len(loaded.rules)} rules in {good_files} of {len(loaded.files)} files are valid"
          + (f"; {len(loaded.errors)} error(s)" if loaded.errors else "")
          + (f"; {len(warnings)} warning(s)" if warnings else ""))
    return 1 if loaded.errors else 0


def _paused_lines(settings: Settings, rules: Sequence[Rule]) -> list[str]:
    """Campaigns the guard paused, as the running server sees them (from the store)."""
    from .stores.backends import open_store
    from .stores.pauses import load_pauses, paused_rules
    from .stores.sqlite import SQLiteStore

    fingerprints = {rule.id: rule.fingerprint for rule in rules}

    store = open_store(settings.store)
    if isinstance(store, SQLiteStore) and not store.path.exists():
        return []  # no embedded store yet: nothing ran, nothing is paused (and none is made)

    async def read() -> list[str]:
        await store.open()
        try:
            found = []
            for site in settings.sites.values():
                pauses = await load_pauses(store, site.key)
                for rule_id in sorted(paused_rules(pauses, fingerprints)):
                    pause = pauses[rule_id]
                    found.append(f"paused: {rule_id} on site {site.key}: it lowered "
                                 f"conversions ({pause.difference * 100:+.1f} points against "
                                 "its control group); resume it in the dashboard or change it")
            return found
        finally:
            await store.close()

    try:
        return asyncio.run(read())
    except Exception as error:  # the rules are still checked; say why pauses are unknown
        return [f"warning: cannot tell which campaigns are paused: the store "
                f"{settings.store} cannot be read ({error})".replace("\n", " ")]


def rules_explain(args: argparse.Namespace) -> int:
    from datetime import datetime

    from .core.explain import explain

    settings = _settings(args)
    loaded = load_rules(settings.rules)
    for error in loaded.errors:
        print(error, file=sys.stderr)
    site = next(iter(settings.sites.values()))
    start = datetime.fromisoformat(args.start) if args.start else datetime.now(site.zone)
    try:
        lines = args.events.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        print(f"{args.events}: {error.strerror}", file=sys.stderr)
        return 2
    ruleset = RuleSet(loaded.rules, loaded.keywords, loaded.catalog)
    for line in explain(lines, ruleset, site, start, device=args.device):
        print(line)
    return 1 if loaded.errors else 0


def keys_command(args: argparse.Namespace) -> int:
    """popin keys create|list|revoke: the backend's API keys, stored as digests."""
    import time

    from .stores.keys import new_key

    settings = _settings(args)
    if _site(args, settings) is None:
        return 2

    async def work(store: Store) -> int:
        if args.keys_command == "create":
            token, key = new_key(args.site, tuple(dict.fromkeys(args.scope)), args.label,
                                 time.time())
            await store.put_key(key)
            print(f"key {key.id} for site {key.site}, scopes {', '.join(key.scopes)}")
            print(f"token (shown once, keep it secret): {token}")
            return 0
        keys = await store.list_keys(args.site)
        if args.keys_command == "list":
            for key in keys:
                state = "revoked" if key.revoked else "active"
                print(f"{key.id}  {state:7}  {','.join(key.scopes):24}  {key.label}")
            return 0
        found = next((key for key in keys if key.id == args.key_id), None)
        if found is None:
            print(f"no key {args.key_id!r} for site {args.site!r}", file=sys.stderr)
            return 1
        await store.put_key(found.revoke(time.time()))
        print(f"revoked key {found.id}")
        return 0

    return _with_store(settings, work)


def owner_lists(args: argparse.Namespace) -> int:
    """popin bookings list --day D / popin leads list --since D: what visitors asked for."""
    from datetime import date, datetime, time, timedelta

    from .core.rules.forms import when

    settings = _settings(args)
    site = _site(args, settings)
    if site is None:
        return 2
    try:
        day = date.fromisoformat(args.day if args.command == "bookings" else args.since)
    except ValueError:
        print("give the day as YYYY-MM-DD", file=sys.stderr)
        return 2
    start = datetime.combine(day, time(0), tzinfo=site.zone).timestamp()

    async def work(store: Store) -> int:
        if args.command == "bookings":
            end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=site.zone)
            for booking in await store.list_bookings(site.key, start, end.timestamp()):
                print(f"{when(booking.start, site.zone)}  {booking.status:9}  "
                      f"{booking.calendar}  {booking.channel:5}  {booking.name}  "
                      f"{booking.contact}")
        else:
            for lead in await store.list_leads(site.key, start):
                print(f"{when(lead.created, site.zone)}  {lead.channel:8}  {lead.name}  "
                      f"{lead.contact}  {lead.message}")
        return 0

    return _with_store(settings, work)


def audiences_command(args: argparse.Namespace) -> int:
    """popin audiences list | export NAME | sizes NAME: what the ad platforms get."""
    import time

    from .features.exports import ExportError, start_export

    settings = _settings(args)
    if _site(args, settings) is None:
        return 2
    loaded = load_rules(settings.rules) if settings.rules.exists() else None
    ruled = RuleSet(loaded.rules).audience_days if loaded else {}

    async def work(store: Store) -> int:
        infos = {info.name: info for info in await store.audience_list(args.site)}
        if args.audiences_command == "list":
            for name in sorted(set(infos) | set(ruled)):
                size = infos[name].size if name in infos else 0
                days = f"{ruled[name]} days" if name in ruled else "not in the rules"
                print(f"{name:32}  {size:>9} members  {days}")
            return 0
        if args.name not in infos and args.name not in ruled:
            print(f"no audience {args.name!r} (popin audiences list)", file=sys.stderr)
            return 2
        if args.audiences_command == "sizes":
            for day, size in await store.audience_sizes(args.site, args.name):
                print(f"{day}  {size}")
            return 0
        try:
            export = await start_export(store, args.site, args.name, args.format,
                                        time.time(), args.since, args.until, args.change)
        except ExportError as error:
            print(f"popin: {error.field}: {error}", file=sys.stderr)
            return 2
        out = args.output.open("wb") if args.output else sys.stdout.buffer
        try:
            async for chunk in export.body:
                out.write(chunk)
        finally:
            if args.output:
                out.close()
            else:
                out.flush()
        # On stderr, so that stdout is exactly the file.
        print(f"next cursor: {export.cursor}", file=sys.stderr)
        return 0

    return _with_store(settings, work)


def admin_set_password(args: argparse.Namespace) -> int:
    """popin admin set-password: the dashboard's owner password, kept as an argon2 hash."""
    import getpass

    from .web.admin.auth import PASSWORD_SETTING, hash_password

    settings = _settings(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("New dashboard password: ")
        if getpass.getpass("Once more: ") != password:
            print("the two passwords differ; nothing changed", file=sys.stderr)
            return 1
    try:
        hashed = hash_password(password)
    except ValueError as error:
        print(f"popin: {error}; nothing changed", file=sys.stderr)
        return 1

    async def work(store: Store) -> int:
        await store.setting_put(PASSWORD_SETTING, hashed)
        print("password set; sessions opened with the old one have ended")
        return 0

    return _with_store(settings, work)


def widget_build(args: argparse.Namespace) -> int:
    from .web.widget import SCRIPTS, build, size_of

    for source, built in SCRIPTS:
        script = build(source)
        size = size_of(script)
        if args.check:
            if not built.exists() or built.read_text(encoding="utf-8") != script:
                print(f"{built} is out of date: run 'popin widget build'", file=sys.stderr)
                return 1
        else:
            built.write_text(script, encoding="utf-8")
        print(f"{built}: {size.minified} bytes minified, {size.gzipped} bytes gzipped")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="popin", description="On-site trigger marketing server.")
    top.add_argument("--version", action="version", version=f"popin {__version__}")
    top.add_argument("--config", type=Path, help="a popin.toml settings file")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("serve", help="run the server (widget, socket, demo shop)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--store", help="sqlite:///popin.db (default) or redis://host:6379/0")
    run.add_argument("--rules", type=Path, help="folder of rule files (default: rules/)")
    run.add_argument("--geoip", type=Path, help="a MaxMind-format .mmdb for geo conditions")
    run.add_argument("--no-reload", action="store_true",
                     help="do not watch the rules folder (SIGHUP still reloads)")
    run.add_argument("--log-level", default="info",
                     choices=["critical", "error", "warning", "info", "debug"])
    run.set_defaults(func=serve)

    rules = commands.add_parser("rules", help="work with rule files")
    rule_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    check = rule_commands.add_parser("check", help="validate rule files; errors as file:line")
    check.add_argument("path", nargs="?", type=Path, help="file or folder (default: rules/)")
    check.add_argument("--geoip", type=Path, help="the .mmdb that geo conditions will use")
    check.set_defaults(func=rules_check)
    explain = rule_commands.add_parser(
        "explain", help="replay recorded events (JSON Lines) and say which rules fired and why")
    explain.add_argument("events", type=Path, help="one widget message per line; optional "
                         '"at" (seconds); {"type": "tick"} lets timers come due')
    explain.add_argument("--rules", type=Path, help="folder of rule files (default: rules/)")
    explain.add_argument("--start", help="when the replay starts, ISO 8601 "
                         "(default: now, site time)")
    explain.add_argument("--device", default="desktop",
                         choices=["desktop", "mobile", "tablet", "bot", "other"])
    explain.set_defaults(func=rules_explain)

    keys = commands.add_parser("keys", help="API keys for the site's backend")
    keys.add_argument("--site", default="demo", help="the site key (default: demo)")
    keys.add_argument("--store", help="the store, as for serve")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = key_commands.add_parser("create", help="make a key; its token is shown once")
    create.add_argument("--scope", action="append", required=True,
                        choices=["events", "profiles", "export"],
                        help="events, profiles or export; repeat for several")
    create.add_argument("--label", default="", help="what the key is for")
    key_commands.add_parser("list", help="the site's keys (never their tokens)")
    revoke = key_commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    for sub_parser in (create, revoke):
        sub_parser.set_defaults(func=keys_command)
    key_commands.choices["list"].set_defaults(func=keys_command)

    for name, what in (("bookings", "appointments booked by visitors"),
                       ("leads", "requests for help left by visitors")):
        owner = commands.add_parser(name, help=what)
        owner.add_argument("--site", default="demo")
        owner.add_argument("--store", help="the store, as for serve")
        owner_commands = owner.add_subparsers(dest=f"{name}_command", required=True,
                                              metavar="COMMAND")
        listing = owner_commands.add_parser("list", help=f"list {what}")
        if name == "bookings":
            listing.add_argument("--day", required=True, help="YYYY-MM-DD, site time")
        else:
            listing.add_argument("--since", required=True, help="YYYY-MM-DD, site time")
        listing.set_defaults(func=owner_lists)

    audiences = commands.add_parser("audiences", help="retargeting audiences for ad platforms")
    audiences.add_argument("--site", default="demo")
    audiences.add_argument("--store", help="the store, as for serve")
    audiences.add_argument("--rules", type=Path, help="folder of rule files (default: rules/)")
    audience_commands = audiences.add_subparsers(dest="audiences_command", required=True,
                                                 metavar="COMMAND")
    audience_commands.add_parser("list", help="audiences, their sizes and membership days")
    sizes = audience_commands.add_parser("sizes", help="members per day (UTC)")
    sizes.add_argument("name")
    export = audience_commands.add_parser(
        "export", help="write an audience in a generic or ad-platform format")
    export.add_argument("name")
    export.add_argument("--format", default="csv",
                        choices=["csv", "jsonl", "meta", "google", "ids"],
                        help="csv, jsonl (generic), meta (Custom Audiences), google (Customer "
                        "Match), ids (first-party visitor ids)")
    export.add_argument("--since", default="", help="a cursor from an earlier export: only "
                        "who joined or left since")
    export.add_argument("--until", default="", help="a cursor: the delta ends there")
    export.add_argument("--change", default="", choices=["", "joined", "left"],
                        help="with --since: only joins (an upload) or only leaves (a removal)")
    export.add_argument("--output", "-o", type=Path, help="a file (default: standard output)")
    for sub_parser in (sizes, export):
        sub_parser.set_defaults(func=audiences_command)
    audience_commands.choices["list"].set_defaults(func=audiences_command)

    admin = commands.add_parser("admin", help="the owner's dashboard at /admin")
    admin.add_argument("--store", help="the store, as for serve")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    password = admin_commands.add_parser("set-password", help="set the dashboard password "
                                         "(at least 10 characters)")
    password.add_argument("--password-stdin", action="store_true",
                          help="read it from standard input instead of asking")
    password.set_defaults(func=admin_set_password)

    widget = commands.add_parser("widget", help="build the browser widget")
    widget_commands = widget.add_subparsers(dest="widget_command", required=True,
                                            metavar="COMMAND")
    build = widget_commands.add_parser("build", help="minify widget/popin.js into static/")
    build.add_argument("--check", action="store_true", help="fail if the built file is stale")
    build.set_defaults(func=widget_build)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
