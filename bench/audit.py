"""Audit log speed: durable appends on SQLite, full verification, and a compliance query.

1. Sustained appends with commit-before-ack: CLIENTS concurrent clients (asyncio tasks, as
   an async admin API would run them) each await ``append_async``, which returns only
   after the event's transaction is committed with SQLite ``synchronous=FULL``. Measured
   side by side with the naive way, one transaction (one fsync) per event.
2. A log of ``--events`` events (default 1,000,000) written through the same writer.
3. Full verification of that log: every event's canonical JSON rehashed, the chain, every
   checkpoint's Merkle root and Ed25519 signature; in one pass, then (the default) split
   across one worker process per CPU.
4. "Who accessed model X" on that log: latency over many models, p50 and p95.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fedvault.server.audit import AuditLog, SigningKey, verify_log, who_accessed
from fedvault.server.core.db import open_database

MODELS = 10_000
USERS = 1_000


def _event(i: int) -> dict[str, Any]:
    """A plausible admin API event: mostly model reads, some denials, a few key operations."""
    mixed = (i * 2654435761) & 0xFFFFFFFF  # spreads models and users independently of i
    kind = i % 20
    model = f"model-{mixed % MODELS}"
    base = {
        "actor": f"user-{(mixed // MODELS) % USERS}",
        "actor_type": "user",
        "project": f"project-{i % 50}",
        "source": f"10.0.{i % 256}.{(i // 256) % 256}",
        "request_id": f"req-{i:08d}",
        "policy": "policy-set:3f2a9c",
    }
    if kind < 12:
        action, outcome = "model.download", "allowed"
    elif kind < 14:
        action, outcome = "model.download", "denied"
    elif kind < 18:
        action, outcome = "model.read", "allowed"
    else:
        return base | {
            "action": "run.submit",
            "resource_type": "run",
            "resource_id": f"run-{i}",
            "outcome": "allowed",
            "details": {"rounds": 10, "target-epsilon": 4.0},
        }
    return base | {
        "action": action,
        "resource_type": "model",
        "resource_id": f"{model}:{1 + i % 3}",
        "outcome": outcome,
        "details": {"bytes": 1_048_576 + i % 1000, "format": "safetensors"},
    }


async def _clients(log: AuditLog, *, clients: int, seconds: float, start: int) -> int:
    """Run ``clients`` concurrent clients for ``seconds``; return how many events they got
    acknowledged."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(c: int) -> None:
        nonlocal done
        i = start + c
        while time.perf_counter() < deadline:
            await log.append_async(**_event(i))
            done += 1
            i += clients

    await asyncio.gather(*(client(c) for c in range(clients)))
    return done


def append_rate(path: Path, key: SigningKey, *, clients: int, seconds: float, batch: int) -> float:
    engine = open_database(f"sqlite:///{path}")
    log = AuditLog(engine=engine, signing_key=key, max_batch=batch)
    try:
        asyncio.run(_clients(log, clients=clients, seconds=0.5, start=10**8))  # warm up
        started = time.perf_counter()
        done = asyncio.run(_clients(log, clients=clients, seconds=seconds, start=0))
        return done / (time.perf_counter() - started)
    finally:
        log.close()
        engine.dispose()


def fill(path: Path, key: SigningKey, events: int) -> float:
    """Write ``events`` events through the writer, a window of submissions in flight."""
    engine = open_database(f"sqlite:///{path}")
    log = AuditLog(engine=engine, signing_key=key)
    started = time.perf_counter()
    window = []
    for i in range(events):
        window.append(log.submit(**_event(i)))
        if len(window) >= 8192:
            window[-1].result()
            window.clear()
    for future in window:
        future.result()
    log.close()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return events / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="size of the big log")
    parser.add_argument("--clients", type=int, default=1024, help="concurrent appending clients")
    parser.add_argument("--seconds", type=float, default=5.0, help="each append measurement")
    parser.add_argument("--queries", type=int, default=300, help="access queries timed")
    args = parser.parse_args()
    key = SigningKey.generate()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} before starting")
    with tempfile.TemporaryDirectory(dir=os.environ.get("FEDVAULT_BENCH_DIR")) as tmp:
        work = Path(tmp)
        grouped = append_rate(
            work / "grouped.db", key, clients=args.clients, seconds=args.seconds, batch=4096
        )
        naive = append_rate(
            work / "naive.db", key, clients=args.clients, seconds=args.seconds, batch=1
        )
        print(f"durable appends, {args.clients} concurrent clients, SQLite synchronous=FULL:")
        print(f"  group commit (one writer)     {grouped:>10,.0f} events/s")
        print(f"  one fsync per event (naive)   {naive:>10,.0f} events/s")
        print(f"  group commit / naive          {grouped / naive:>10.1f}x")

        big = work / "big.db"
        filled = fill(big, key, args.events)
        print(f"wrote a {args.events:,}-event log: {filled:,.0f} events/s (bulk submissions)")

        engine = open_database(f"sqlite:///{big}", migrate=False)
        rates = {}
        for name, workers in (("one pass", 1), (f"{os.cpu_count()} processes", None)):
            started = time.perf_counter()
            report = verify_log(engine, key.public, workers=workers)
            verify_s = time.perf_counter() - started
            assert report.ok and report.events == args.events, report
            rates[name] = report.events / verify_s
            print(
                f"full verify, {name}: {report.events:,} events, {report.checkpoints} "
                f"checkpoints in {verify_s:.2f} s = {rates[name]:,.0f} events/s"
            )
        verify_rate = rates[name]  # the default: one process per CPU
        print(f"  parallel / one pass             {verify_rate / rates['one pass']:>10.2f}x")

        rng = random.Random(7)
        latencies, rows = [], 0
        for _ in range(args.queries):
            model = f"model-{rng.randrange(MODELS)}"
            started = time.perf_counter()
            rows += len(who_accessed(engine, model))
            latencies.append((time.perf_counter() - started) * 1000)
        engine.dispose()
        latencies.sort()
        p50 = statistics.median(latencies)
        p95 = latencies[int(0.95 * len(latencies)) - 1]
        print(
            f"who accessed model X ({args.queries} models, {rows / args.queries:.1f} rows each): "
            f"p50 {p50:.2f} ms, p95 {p95:.2f} ms"
        )
    print(f"RESULT naive_append_events_per_s={naive:.0f}")
    print(f"RESULT verify_events_per_s={verify_rate:.0f}")
    print(f"RESULT access_query_p95_ms={p95:.2f}")
    print(f"RESULT durable_append_events_per_s={grouped:.0f}")


if __name__ == "__main__":
    main()
