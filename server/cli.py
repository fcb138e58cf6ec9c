"""The `popin` command. One grammar: every command takes --config and --site, before or
after its own name; `popin --help` and each command's --help end with an example."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path

from . import __version__
from .config import (
    CONFIG_FILE,
    CONFIG_VARIABLE,
    DEFAULT_RULES,
    ConfigError,
    Settings,
    find_config,
    load_settings,
)
from .core.checks import render_warnings, rule_warnings
from .core.rules.campaign import Rule, load_rules, rule_files
from .core.rules.engine import RuleSet
from .core.rules.schema import plural
from .core.site import Site
from .stores.contract import Store
from .stores.urls import without_password


class Refused(Exception):
    """A setting or option that cannot be used: `main` says it in one line and returns 2,
    as for any usage error (a config is fixed, not debugged)."""


def _settings(args: argparse.Namespace) -> Settings:
    try:
        settings = load_settings(find_config(getattr(args, "config", None)),
                                 sites_required=True)
    except ConfigError as error:
        raise Refused(str(error)) from None
    if getattr(args, "store", None):
        settings.store = args.store
    if getattr(args, "rules", None):
        if len(settings.sites) > 1:
            raise Refused("--rules names one campaign folder; with several sites each names "
                          "its own in popin.toml ([[sites]] rules = ...)")
        settings.rules = args.rules
        settings.campaigns = {}
    if getattr(args, "geoip", None):
        settings.geoip = args.geoip
    if getattr(args, "no_reload", False):
        settings.reload = False
    if getattr(args, "site", None) and args.site not in settings.sites:
        raise Refused(_unknown_site(args.site, settings, getattr(args, "config", None)))
    return settings


def _unknown_site(key: str, settings: Settings, config: Path | None = None) -> str:
    return (f"--site {key}: no such site in {_config_said(config)}; configured: "
            f"{', '.join(settings.sites)}")


def _config_said(config: Path | None) -> str:
    try:
        found = find_config(config)
    except ConfigError:
        found = None
    return str(found) if found else "the defaults (no popin.toml here)"


def _site(args: argparse.Namespace, settings: Settings) -> Site:
    """The site named by --site, else the only configured one."""
    key = getattr(args, "site", None)
    if key is None:
        if len(settings.sites) == 1:
            return next(iter(settings.sites.values()))
        raise Refused(f"several sites are configured ({', '.join(settings.sites)}): say which "
                      "with --site")
    site = settings.sites.get(key)
    if site is None:
        raise Refused(_unknown_site(key, settings, getattr(args, "config", None)))
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
    from .web.limits import raise_open_files, socket_ceiling, worker_share
    from .web.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    settings = _settings(args)
    if settings.geoip is not None and not settings.geoip.is_file():
        raise Refused(f"geoip: {settings.geoip} does not exist")
    for key, folder in settings.folders().items():
        if not folder.exists():
            _say(args, f"popin: rules: {folder} does not exist"
                 + (f" (site {key})" if len(settings.sites) > 1 else ""), logging.ERROR)
            return 2
    _check_workers(args, settings)
    problem = _store_problem(settings.store)
    if problem:
        _say(args, f"popin: store: {problem}", logging.ERROR)
        return 2
    open_files = raise_open_files()
    settings.limits = replace(settings.limits,
                              connections=socket_ceiling(settings.limits, open_files))
    worker_fd = os.environ.get(WORKER_FD)
    if worker_fd is not None and args.workers > 1:
        settings.limits = worker_share(settings.limits, args.workers)
    if args.workers > 1 and worker_fd is None:
        return _supervise(args, settings)
    app = create_app(settings, serving=True)
    where = f"http://{args.host}:{args.port}/"
    shown = f"demo shop at {where}demo/" if "demo" in settings.sites else f"listening on {where}"
    if worker_fd is None:
        _say(args, f"popin {__version__}: {shown} (sites {', '.join(settings.sites)}; store "
             f"{without_password(settings.store)}, rules {_folders_said(settings)}; at most "
             f"{plural(settings.limits.connections, 'socket')}, "
             f"{plural(open_files, 'open file')})")
        # log_config=None: uvicorn's lines go through popin's handler (configure_logging).
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                    log_config=None, **uvicorn_options(settings))
        return 0
    # A worker of `--workers N`: it serves the listening socket its parent bound.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            log_config=None, **uvicorn_options(settings))
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=int(worker_fd))])
    return 0


WORKER_FD = "POPIN_WORKER_FD"


def _say(args: argparse.Namespace, line: str, level: int = logging.INFO,
         **fields: object) -> None:
    """A line of `popin serve` itself: as it always was on a terminal, and one more JSON
    line (with `fields`) under --log-format json."""
    from .web.logs import scrub

    if args.log_format == "json":
        logging.getLogger("popin.serve").log(level, line, extra=fields)
    else:
        print(scrub(line), file=sys.stderr)


def _check_workers(args: argparse.Namespace, settings: Settings) -> None:
    from .live.relay import redis_url

    if args.workers < 1:
        raise Refused(f"--workers {args.workers}: at least 1")
    if args.workers > 1 and not redis_url(settings.store):
        raise Refused(f"--workers {args.workers} needs a Redis store (--store "
                      "redis://host:6379/0): the embedded SQLite store keeps live sessions in "
                      "one process")


WORKER_STOP_SECONDS = 15


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """Bind the port once and run `--workers` processes that all accept on it; a worker
    that dies is started again; SIGTERM or Ctrl-C stops them all. The workers keep their
    metrics in one folder (its own temporary one unless PROMETHEUS_MULTIPROC_DIR names
    one), so that a scrape of any of them counts them all."""
    import signal
    import subprocess
    import tempfile
    import time

    import uvicorn
    from prometheus_client.multiprocess import mark_process_dead

    from .live.metrics import MULTIPROCESS_VARIABLE

    # log_config=None: uvicorn's "running on" line goes through popin's handler too.
    listening = uvicorn.Config(None, host=args.host, port=args.port,  # type: ignore[arg-type]
                               log_config=None).bind_socket()
    listening.set_inheritable(True)
    fd = listening.fileno()
    command = [sys.executable, "-m", "popin", *args.argv]
    given = os.environ.get(MULTIPROCESS_VARIABLE)
    metrics = given or tempfile.mkdtemp(prefix="popin-metrics-")
    # A previous run's files would add its totals to this one's.
    for old in Path(metrics).glob("*.db"):
        old.unlink()
    environment = {**os.environ, WORKER_FD: str(fd), MULTIPROCESS_VARIABLE: metrics}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=environment, pass_fds=(fd,))

    _say(args, f"popin {__version__}: {args.workers} workers on http://{args.host}:{args.port}/ "
         f"(sites {', '.join(settings.sites)}; store {without_password(settings.store)}, rules "
         f"{_folders_said(settings)})")
    workers = [start() for _ in range(args.workers)]
    stopping = False

    def stop(_signal: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        time.sleep(0.2)
        for index, worker in enumerate(workers):
            if worker.poll() is not None and not stopping:
                _say(args, f"popin: worker {worker.pid} exited ({worker.returncode}); starting "
                     "another", logging.WARNING, worker=worker.pid, status=worker.returncode)
                # Its gauges (sockets, sessions) leave the sum; its counters stay in it.
                mark_process_dead(worker.pid, metrics)
                workers[index] = start()
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            # Its sessions are snapshotted on a clean stop; one that hangs is not waited for.
            _say(args, f"popin: worker {worker.pid} did not stop in {WORKER_STOP_SECONDS} s; "
                 "killed", logging.WARNING, worker=worker.pid)
            worker.kill()
            worker.wait()
    listening.close()
    if given:
        for worker in workers:
            mark_process_dead(worker.pid, metrics)
    else:
        shutil.rmtree(metrics, ignore_errors=True)
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
        return f"{without_password(url)} cannot be opened: {error}".replace("\n", " ")
    return ""


def _folders_said(settings: Settings) -> str:
    folders = settings.folders()
    if len(set(folders.values())) == 1:
        return str(next(iter(folders.values())))
    return ", ".join(f"{key}: {folder}" for key, folder in folders.items())


def rules_check(args: argparse.Namespace) -> int:
    """Like a compiler: every error of every file, each with its line and a caret; each
    site's campaign folder in turn (or the folder given)."""
    settings = _settings(args)
    if args.path:
        return _check_folder(settings, args.path, list(settings.sites), "")
    chosen = [args.site] if getattr(args, "site", None) else list(settings.sites)
    by_folder: dict[Path, list[str]] = {}
    for key in chosen:
        by_folder.setdefault(settings.folders()[key], []).append(key)
    worst = 0
    for folder, sites in by_folder.items():
        said = f"site {', '.join(sites)}: " if len(settings.sites) > 1 else ""
        worst = max(worst, _check_folder(settings, folder, sites, said))
    return worst


def _check_folder(settings: Settings, path: Path, sites: list[str], said: str) -> int:
    if not path.exists():
        print(f"{said}{path}: no such file or folder", file=sys.stderr)
        return 2
    loaded = load_rules(path, settings.webhooks.allow_http_hosts)
    texts: dict[str, str] = {}
    for error in loaded.errors:
        if error.file not in texts:
            try:
                texts[error.file] = Path(error.file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                texts[error.file] = ""
        print(_here(str(error)), file=sys.stderr)
        excerpt = error.excerpt(texts[error.file])
        if excerpt:
            print(excerpt, file=sys.stderr)
    warnings = rule_warnings(loaded.rules, settings.geoip is not None, loaded.events)
    warnings += render_warnings(RuleSet(loaded.rules, loaded.keywords, loaded.catalog))
    for warning in warnings:
        print(f"warning: {_here(warning)}", file=sys.stderr)
    for line in _paused_lines(settings, loaded.rules, sites):
        print(line)
    print(said + check_summary(len(loaded.rules), len(loaded.files),
                        len({error.file for error in loaded.errors} & set(loaded.files)),
                        len(loaded.errors), len(warnings)))
    return 1 if loaded.errors else 0


def _here(text: str) -> str:
    """Paths under the current folder said from it (rules/a.yaml), as compilers do."""
    return text.replace(f"{Path.cwd()}{os.sep}", "")


def check_summary(rules: int, files: int, bad_files: int, errors: int, warnings: int) -> str:
    """"11 valid rules in 12 files", "1 valid rule in 1 of 2 files; 4 errors in 1 file
    (left out until fixed); 1 warning"."""
    good = files - bad_files
    where = plural(files, "file") if good == files else f"{good} of {plural(files, 'file')}"
    summary = f"{plural(rules, 'valid rule')} in {where}"
    if errors:
        summary += (f"; {plural(errors, 'error')} in {plural(bad_files, 'file')} "
                    "(left out until fixed)" if bad_files else f"; {plural(errors, 'error')}")
    if warnings:
        summary += f"; {plural(warnings, 'warning')}"
    return summary


def _paused_lines(settings: Settings, rules: Sequence[Rule], sites: list[str]) -> list[str]:
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
            for site in (settings.sites[key] for key in sites):
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
                f"{without_password(settings.store)} cannot be read ({error})".replace("\n", " ")]


def rules_preview(args: argparse.Namespace) -> int:
    """popin rules preview RULE: the signed link the dashboard's Preview gives, printed."""
    from .config import load_secret
    from .features.previews import PREVIEW_MAX_AGE, PreviewLinks, page_allowed, preview_pages

    settings = _settings(args)
    site = _site(args, settings)
    loaded = load_rules(settings.folders()[site.key], settings.webhooks.allow_http_hosts)
    rule = next((rule for rule in loaded.rules if rule.id == args.rule), None)
    if rule is None:
        raise Refused(f"no rule {args.rule!r} in the campaigns of site {site.key} "
                      f"({settings.folders()[site.key]})")
    if rule.visual is None:
        raise Refused(f"rule {args.rule!r} shows nothing (it only tags or calls webhooks)")
    if args.variant and args.variant not in {variant.id for variant in rule.variants}:
        raise Refused(f"rule {args.rule!r} has no variant {args.variant!r}")
    server = args.server.rstrip("/")
    pages = preview_pages(site, server)
    if not args.url and not pages:
        raise Refused(f"site {site.key} has no origin of its own to open a preview on: give "
                      "--url with one of its pages")
    page = args.url or pages[0]
    if not page_allowed(page, site.origins, server):
        raise Refused(f"--url {page}: not a page of site {site.key} (its origins: "
                      f"{', '.join(site.origins)})")
    link = PreviewLinks(load_secret(settings)).link(page, site.key, rule.id, args.variant)
    print(link)
    print(f"(open it in your browser while popin runs: the pop-in of {rule.id} shows on that "
          f"page, nothing is counted; the link works for {PREVIEW_MAX_AGE // 3600} hours)",
          file=sys.stderr)
    return 0


def rules_explain(args: argparse.Namespace) -> int:
    from datetime import datetime

    from .core.explain import explain

    settings = _settings(args)
    site = _site(args, settings)
    loaded = load_rules(settings.folders()[site.key], settings.webhooks.allow_http_hosts)
    for error in loaded.errors:
        print(error, file=sys.stderr)
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
    site = _site(args, settings)

    async def work(store: Store) -> int:
        if args.keys_command == "create":
            token, key = new_key(site.key, tuple(dict.fromkeys(args.scope)), args.label,
                                 time.time())
            await store.put_key(key)
            scopes = "scope" if len(key.scopes) == 1 else "scopes"
            print(f"key {key.id} for site {key.site}, {scopes} {', '.join(key.scopes)}")
            print(f"token (shown once, keep it secret): {token}")
            return 0
        keys = await store.list_keys(site.key)
        if args.keys_command == "list":
            for key in keys:
                state = "revoked" if key.revoked else "active"
                print(f"{key.id}  {state:7}  {','.join(key.scopes):24}  {key.label}")
            return 0
        found = next((key for key in keys if key.id == args.key_id), None)
        if found is None:
            print(f"no key {args.key_id!r} for site {site.key!r} (popin keys list)",
                  file=sys.stderr)
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
    site = _site(args, settings)
    folder = settings.folders()[site.key]
    loaded = (load_rules(folder, settings.webhooks.allow_http_hosts) if folder.exists()
              else None)
    ruled = RuleSet(loaded.rules).audience_days if loaded else {}

    async def work(store: Store) -> int:
        infos = {info.name: info for info in await store.audience_list(site.key)}
        if args.audiences_command == "list":
            for name in sorted(set(infos) | set(ruled)):
                size = infos[name].size if name in infos else 0
                days = plural(ruled[name], "day") if name in ruled else "not in the rules"
                print(f"{name:32}  {plural(size, 'member'):>17}  {days}")
            return 0
        if args.name not in infos and args.name not in ruled:
            print(f"no audience {args.name!r} (popin audiences list)", file=sys.stderr)
            return 2
        if args.audiences_command == "sizes":
            for day, size in await store.audience_sizes(site.key, args.name):
                print(f"{day}  {size}")
            return 0
        try:
            export = await start_export(store, site.key, args.name, args.format,
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


def init(args: argparse.Namespace) -> int:
    """popin init: a popin.toml for a first site (fresh secrets), the playbook to start
    from, and what to do next. Never asks: what it guesses, an option chooses."""
    from .config.starter import (
        DEFAULT_STORE,
        Starter,
        check,
        copy_playbook,
        site_key_from,
        site_name_from,
        starter_toml,
        this_machines_zone,
    )

    named = os.environ.get(CONFIG_VARIABLE, "")
    target: Path = getattr(args, "config", None) or (Path(named) if named else Path(CONFIG_FILE))
    if target.exists():
        print(f"popin: {target} already exists; nothing was written (it holds this install's "
              "secrets: move it away first to start over)", file=sys.stderr)
        return 1
    folder = target.parent
    guessed = []
    site = getattr(args, "site", None)
    if site is None:
        site = site_key_from(folder)
        guessed.append(f"the site's key {site!r} from the folder's name (--site KEY)")
    zone = args.timezone
    if zone is None:
        zone = this_machines_zone()
        guessed.append(f"the time zone {zone} from this machine's clock (--timezone ZONE)")
    starter = Starter(site, args.name or site_name_from(site), zone, tuple(args.origin),
                      store=args.store or DEFAULT_STORE, rules=str(args.rules or "rules"))
    try:
        check(starter)
    except ConfigError as error:
        raise Refused(str(error)) from None
    rules = folder / starter.rules
    present = rule_files(rules) if rules.exists() else []
    copied, left_out = 0, list[str]()
    if not present:
        copied, left_out = copy_playbook(DEFAULT_RULES, rule_files(DEFAULT_RULES), rules)
    folder.mkdir(parents=True, exist_ok=True)
    # Owner-only from the start: the file holds secrets.
    with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w",
                   encoding="utf-8") as file:
        file.write(starter_toml(starter))
    # What init writes always loads; a test holds it to that.
    load_settings(target, sites_required=True)

    print(f"Wrote {target}: the site {site!r} ({starter.name}), time zone {zone}, fresh "
          "secrets.")
    for guess in guessed:
        print(f"  guessed {guess}")
    if present:
        print(f"Left {rules}/ as it is: it already holds {plural(len(present), 'rule file')}.")
    else:
        print(f"Copied the playbook into {rules}/: {plural(copied, 'rule file')} to adapt "
              "or delete.")
        if left_out:
            print(f"  left out what changed in {DEFAULT_RULES} since it was shipped (the "
                  f"demo's editor writes there): {', '.join(left_out)}")
    pages = " and ".join(starter.origins) or "your site"
    print(f"\nPaste this tag into the pages of {pages}, before </body>:\n")
    print(f'  <script async src="{args.url.rstrip("/")}/popin.js" data-site="{site}"></script>')
    if not starter.origins:
        print("\nPages of other sites are refused until their origin is listed in "
              f"{target} (origins = [...], e.g. \"https://www.example.com\").")
    if args.url == DEFAULT_URL:
        print(f"({DEFAULT_URL} is this machine: on a server, put popin's public https "
              "address in the tag.)")
    config = "" if target == Path(CONFIG_FILE) else f" --config {target}"
    steps = [(f"popin rules check{config}", f"check the campaigns in {starter.rules}/"),
             (f"popin serve{config}", f"run popin on {DEFAULT_URL}/"),
             (f"popin admin set-password{config}", f"then log in at {DEFAULT_URL}/admin"),
             (f"popin keys create --site {site} --scope events{config}",
              "a key for your site's backend")]
    width = max(len(command) for command, _what in steps)
    print("\nNext:")
    for command, what in steps:
        print(f"  {command:{width}}  # {what}")
    return 0


DEFAULT_URL = "http://127.0.0.1:8000"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' lines as written."""


def _common() -> argparse.ArgumentParser:
    """--config and --site, accepted before or after any command's name."""
    common = argparse.ArgumentParser(add_help=False)
    options = common.add_argument_group("everywhere")
    options.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                         help=f"the settings file (default: ${CONFIG_VARIABLE}, else "
                         f"./{CONFIG_FILE} if there is one)")
    options.add_argument("--site", default=argparse.SUPPRESS, metavar="KEY",
                         help="the site (default: the only one configured)")
    return common


def _command(group: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
             what: str, *examples: str) -> argparse.ArgumentParser:
    epilog = "example:\n" + "\n".join(f"  {example}" for example in examples)
    return group.add_parser(name, help=what, description=what, epilog=epilog,
                            parents=[COMMON], formatter_class=_Formatter)


COMMON = _common()
EXAMPLE = """\
example:
  popin init --site shop --origin https://www.shop.example
  popin serve
  popin keys create --site shop --scope events --label "shop backend"

Settings come from --config FILE, else $POPIN_CONFIG, else ./popin.toml, else the demo."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="popin", description="On-site trigger marketing server.",
                                  epilog=EXAMPLE, parents=[COMMON], formatter_class=_Formatter)
    top.add_argument("--version", action="version", version=f"popin {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = _command(commands, "init", "write a popin.toml for a first site, with the "
                     "playbook's campaigns to start from",
                     "popin init --site shop --name 'Nordic Trail' "
                     "--origin https://www.nordic-trail.example")
    start.add_argument("--name", help="the site's name (default: from its key)")
    start.add_argument("--origin", action="append", default=[], metavar="URL",
                       help="an origin whose pages use the site, e.g. https://www.shop.example "
                       "(repeat for several)")
    start.add_argument("--timezone", metavar="ZONE",
                       help="the site's time zone (default: this machine's)")
    start.add_argument("--url", default=DEFAULT_URL, help="where browsers reach popin, for "
                       f"the script tag (default: {DEFAULT_URL})")
    start.add_argument("--store", help="the store (default: sqlite:///popin.db)")
    start.add_argument("--rules", type=Path, help="the campaigns' folder (default: rules)")
    start.set_defaults(func=init)

    run = _command(commands, "serve", "run the server (widget, socket, API, dashboard)",
                   "popin serve --port 9000", "popin serve --config /etc/popin/popin.toml")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--store", help="sqlite:///popin.db (default), redis://host:6379/0, "
                     "redis+sentinel://host:26379/mastername or redis+cluster://host:7000,...")
    run.add_argument("--rules", type=Path, help="folder of rule files (default: rules/)")
    run.add_argument("--geoip", type=Path, help="a MaxMind-format .mmdb for geo conditions")
    run.add_argument("--no-reload", action="store_true",
                     help="do not watch the rules folder (SIGHUP still reloads)")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="processes sharing the port (needs a Redis store; default 1)")
    run.add_argument("--log-level", default="info",
                     choices=["critical", "error", "warning", "info", "debug"])
    run.add_argument("--log-format", default="text", choices=["text", "json"],
                     help="json: one JSON object per line, for a log collector (default: "
                     "text)")
    run.set_defaults(func=serve)

    rules = _command(commands, "rules", "work with rule files", "popin rules check")
    rule_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    check = _command(rule_commands, "check", "check rule files: every error as "
                     "file:line:column, then warnings", "popin rules check",
                     "popin rules check rules/cart-abandonment.yaml")
    check.add_argument("path", nargs="?", type=Path, help="file or folder (default: rules/)")
    check.add_argument("--geoip", type=Path, help="the .mmdb that geo conditions will use")
    check.set_defaults(func=rules_check)
    explain = _command(rule_commands, "explain", "replay recorded events (JSON Lines) and say "
                       "which rules fired and why", "popin rules explain events.jsonl --start "
                       "2026-11-24T10:00:00+01:00")
    explain.add_argument("events", type=Path, help="one widget message per line; optional "
                         '"at" (seconds); {"type": "tick"} lets timers come due')
    explain.add_argument("--rules", type=Path, help="folder of rule files (default: rules/)")
    explain.add_argument("--start", help="when the replay starts, ISO 8601 "
                         "(default: now, site time)")
    explain.add_argument("--device", default="desktop",
                         choices=["desktop", "mobile", "tablet", "bot", "other"])
    explain.set_defaults(func=rules_explain)
    preview = _command(rule_commands, "preview", "a signed link that shows a rule's pop-in on "
                       "one of the site's pages, in your browser only, counting nothing",
                       "popin rules preview waxing-help --site shop --url "
                       "https://www.shop.example/skis")
    preview.add_argument("rule", help="the rule's id")
    preview.add_argument("--url", help="the page to show it on (default: the site's first "
                         "origin of its own; needed when its only origin is 'self')")
    preview.add_argument("--variant", default="", help="a variant of an experiment")
    preview.add_argument("--server", default="http://127.0.0.1:8000",
                         help="popin's own address, for a site served by popin ('self')")
    preview.set_defaults(func=rules_preview)

    keys = _command(commands, "keys", "API keys for the site's backend",
                    "popin keys create --site shop --scope events")
    keys.add_argument("--store", default=argparse.SUPPRESS, help="the store, as for serve")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = _command(key_commands, "create", "make a key; its token is shown once",
                      'popin keys create --site shop --scope events --scope profiles '
                      '--label "shop backend"')
    create.add_argument("--scope", action="append", required=True,
                        choices=["events", "profiles", "export"],
                        help="events, profiles or export; repeat for several")
    create.add_argument("--label", default="", help="what the key is for")
    listing = _command(key_commands, "list", "the site's keys (never their tokens)",
                       "popin keys list --site shop")
    revoke = _command(key_commands, "revoke", "revoke a key at once",
                      "popin keys revoke --site shop 3f9a1c2b")
    revoke.add_argument("key_id")
    for sub_parser in (create, listing, revoke):
        sub_parser.add_argument("--store", default=argparse.SUPPRESS,
                                help="the store, as for serve")
        sub_parser.set_defaults(func=keys_command)

    for name, what, option, day in (
            ("bookings", "appointments booked by visitors", "--day", "2026-11-24"),
            ("leads", "requests for help left by visitors", "--since", "2026-11-01")):
        owner = _command(commands, name, what, f"popin {name} list {option} {day}")
        owner.add_argument("--store", default=argparse.SUPPRESS, help="the store, as for serve")
        owner_commands = owner.add_subparsers(dest=f"{name}_command", required=True,
                                              metavar="COMMAND")
        listed = _command(owner_commands, "list", f"list {what}",
                          f"popin {name} list --site shop {option} {day}")
        listed.add_argument(option, required=True, help="YYYY-MM-DD, site time")
        listed.add_argument("--store", default=argparse.SUPPRESS, help="the store, as for serve")
        listed.set_defaults(func=owner_lists)

    audiences = _command(commands, "audiences", "retargeting audiences for ad platforms",
                         "popin audiences list")
    audiences.add_argument("--store", default=argparse.SUPPRESS, help="the store, as for serve")
    audiences.add_argument("--rules", type=Path, default=argparse.SUPPRESS,
                           help="folder of rule files (default: rules/)")
    audience_commands = audiences.add_subparsers(dest="audiences_command", required=True,
                                                 metavar="COMMAND")
    listed = _command(audience_commands, "list", "audiences, their sizes and membership days",
                      "popin audiences list --site shop")
    sizes = _command(audience_commands, "sizes", "members per day (UTC)",
                     "popin audiences sizes cart-abandoners")
    sizes.add_argument("name")
    export = _command(audience_commands, "export",
                      "write an audience in a generic or ad-platform format",
                      "popin audiences export cart-abandoners --format google -o ads.csv")
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
    for sub_parser in (listed, sizes, export):
        sub_parser.add_argument("--store", default=argparse.SUPPRESS,
                                help="the store, as for serve")
        sub_parser.add_argument("--rules", type=Path, default=argparse.SUPPRESS,
                                help="folder of rule files (default: rules/)")
        sub_parser.set_defaults(func=audiences_command)

    admin = _command(commands, "admin", "the owner's dashboard at /admin",
                     "popin admin set-password")
    admin.add_argument("--store", default=argparse.SUPPRESS, help="the store, as for serve")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    password = _command(admin_commands, "set-password", "set the dashboard password (at "
                        "least 10 characters)", "popin admin set-password",
                        "printf '%s\\n' \"$PASSWORD\" | popin admin set-password "
                        "--password-stdin")
    password.add_argument("--password-stdin", action="store_true",
                          help="read it from standard input instead of asking")
    password.add_argument("--store", default=argparse.SUPPRESS, help="the store, as for serve")
    password.set_defaults(func=admin_set_password)

    widget = _command(commands, "widget", "build the browser widget", "popin widget build")
    widget_commands = widget.add_subparsers(dest="widget_command", required=True,
                                            metavar="COMMAND")
    build = _command(widget_commands, "build", "minify widget/popin.js into static/",
                     "popin widget build --check")
    build.add_argument("--check", action="store_true", help="fail if the built file is stale")
    build.set_defaults(func=widget_build)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # What `serve --workers` runs again in each worker.
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        code: int = args.func(args)
    except Refused as refused:
        print(f"popin: {refused}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
