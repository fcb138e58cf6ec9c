"""Audience exports at size: time and peak memory of each format, for 100,000 and
1,000,000 members, against a baseline measured in the same run.

    python bench/audiences.py [--sizes 100000,1000000] [--json bench/results/audiences.json]

The embedded store is filled through the store contract (`audience_tag`, in batches)
with every size first, then each export runs in a fresh process so that its peak memory
is its own. The baseline is the least any export must do: read the same rows from the
same SQLite file with one plain SELECT and write them out as stored. Figures that matter:

- time / baseline time, per format (absolute times move from machine to machine);
- peak memory growth (above the process's memory once imports are done) at 1,000,000
  members / at 100,000: flat means close to 1.0.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMATS = ("csv", "jsonl", "meta", "google", "ids")
NOW = 1_790_000_000.0
BATCH = 20_000


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def fill(path: Path, audience: str, count: int) -> float:
    from popin.stores.audiences import Tagging
    from popin.stores.backends import open_store

    store = open_store(f"sqlite:///{path}")
    await store.open()
    started = time.perf_counter()
    try:
        for start in range(0, count, BATCH):
            batch = []
            for n in range(start, min(count, start + BATCH)):
                digest = hashlib.sha256(f"{audience}{n}".encode()).hexdigest()
                # Four in five members are identified: every format has rows to write.
                ids = {"user_id": f"user-{n}", "email": digest, "email_google": digest,
                       "phone": digest[::-1], "phone_digits": digest[1:] + "0",
                       "fn": digest[2:] + "00"} if n % 5 else {}
                batch.append(Tagging(f"{audience}-{n:09d}", audience, NOW + 30 * 86400, ids))
            await store.audience_tag("bench", batch, NOW)
    finally:
        await store.close()
    return time.perf_counter() - started


async def churn(path: Path, audience: str, count: int) -> None:
    """1% of the audience leaves and as many newcomers join: what a night might bring."""
    from popin.stores.audiences import Tagging
    from popin.stores.backends import open_store

    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        changed = max(1, count // 100)
        for n in range(0, changed * 100, 100):
            await store.audience_leave("bench", f"{audience}-{n:09d}", NOW + 60)
        await store.audience_tag("bench", [
            Tagging(f"{audience}-new-{n:09d}", audience, NOW + 30 * 86400, {"email": f"{n:064d}"})
            for n in range(changed)], NOW + 60)
    finally:
        await store.close()


def child_export(path: str, audience: str, format_name: str, since: str) -> dict[str, float]:
    from popin.features.exports import start_export
    from popin.stores.backends import open_store

    async def run() -> dict[str, float]:
        store = open_store(f"sqlite:///{path}")
        await store.open()
        before = rss_kb()
        started = time.perf_counter()
        written = lines = 0
        with open(os.devnull, "wb") as sink:
            export = await start_export(store, "bench", audience, format_name, NOW + 120,
                                        since=since, change="joined" if since else "")
            async for chunk in export.body:
                sink.write(chunk)
                written += len(chunk)
                lines += chunk.count(b"\n")
        seconds = time.perf_counter() - started
        await store.close()
        return {"seconds": seconds, "bytes": written, "lines": lines,
                "peak_growth_kb": max(0, peak_kb() - before), "cursor": export.cursor}

    return asyncio.run(run())


def child_baseline(path: str, audience: str) -> dict[str, float]:
    """The same rows out of the same file, as they are stored, one per line: the floor."""
    db = sqlite3.connect(path)
    before = rss_kb()
    started = time.perf_counter()
    lines = 0
    with open(os.devnull, "wb") as sink:
        for (data,) in db.execute(
                "SELECT data FROM audience_members WHERE site = 'bench' AND "
                "audience = ? AND ended = 0 ORDER BY visitor", (audience,)):
            sink.write(data + b"\n")
            lines += 1
    return {"seconds": time.perf_counter() - started, "lines": lines,
            "peak_growth_kb": max(0, peak_kb() - before)}


def in_child(*args: str) -> dict[str, float]:
    output = subprocess.run([sys.executable, __file__, "--child", *args], check=True,
                            capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(output)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = (child_baseline(*rest) if kind == "baseline"
                  else child_export(rest[0], rest[1], rest[2], rest[3] if len(rest) > 3 else ""))
        print(json.dumps(result))
        return 0

    sizes = [int(size) for size in args.sizes.split(",")]
    report: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        for size in sizes:
            took = asyncio.run(fill(path, f"members-{size}", size))
            print(f"filled {size:,} members through the store contract in {took:.1f} s",
                  file=sys.stderr)
        for size in sizes:
            audience = f"members-{size}"
            rows = report[str(size)] = {"baseline": in_child("baseline", str(path), audience)}
            for format_name in FORMATS:
                rows[format_name] = in_child("export", str(path), audience, format_name)
            # An incremental export after a night's churn, from the full export's cursor.
            cursor = str(rows["csv"]["cursor"])
            asyncio.run(churn(path, audience, size))
            rows["meta delta"] = in_child("export", str(path), audience, "meta", cursor)
        print(f"database: {path.stat().st_size / 1e6:.0f} MB", file=sys.stderr)

    largest, smallest = str(sizes[-1]), str(sizes[0])
    print(f"{'export':12} {'members':>10} {'lines':>10} {'seconds':>8} {'x baseline':>10} "
          f"{'peak MB':>8} {'peak vs ' + f'{int(smallest):,}':>14}")
    for size, rows in report.items():
        base = rows["baseline"]["seconds"]
        for name, row in rows.items():
            growth = row["peak_growth_kb"] / 1024
            small = report[smallest][name]["peak_growth_kb"] / 1024
            flat = f"{growth / small:.2f}x" if size == largest and small > 0 else ""
            print(f"{name:12} {int(size):>10,} {int(row['lines']):>10,} {row['seconds']:>8.2f} "
                  f"{row['seconds'] / base:>9.2f}x {growth:>8.1f} {flat:>14}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
