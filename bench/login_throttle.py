"""Cost of the shared log-in throttle per attempt, against the argon2 password check that every attempt runs anyway.

Run: .venv/bin/python bench/login_throttle.py [--attempts N] [--rows N]

Each figure is the median time of one call on a connection of the server's pool, over ``--attempts`` calls:
- wrong password, new pair: ``LoginThrottle.attempt`` inserts the pair's row (one statement).
- wrong password, known pair: ``attempt`` appends to a pair with 1 to 4 failures (one statement).
- locked pair: ``attempt`` raises ``LoginThrottled`` without writing (one statement).
- right password: ``attempt``, then ``succeeded`` in the session's transaction and its commit.
The same attempts run again with ``--rows`` rows of other pairs in the table, as during a spray of user names,
and the script times one ``prune``, which deletes a batch of at most 10,000 expired rows. The reference is ``PasswordHasher().verify`` of a
wrong password in the same run. The script starts its own PostgreSQL on a loopback port and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError

from valuegate.cloud import db
from valuegate.cloud.throttle import LoginThrottle, LoginThrottled
from valuegate.services import PostgresServer

from bench_db import fresh_database, machine_line


def argon2_median(attempts: int) -> float:
    hasher = PasswordHasher()
    digest = hasher.hash("the right password")
    times = []
    for _ in range(max(5, attempts // 20)):
        started = time.perf_counter()
        try:
            hasher.verify(digest, "a wrong password")
        except VerifyMismatchError:
            pass
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def median(call: Callable[[int], Awaitable[Any]], attempts: int) -> float:
    times = []
    for number in range(attempts):
        started = time.perf_counter()
        await call(number)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def measure(conn: psycopg.AsyncConnection[Any], throttle: LoginThrottle, attempts: int, label: str) -> dict[str, float]:
    async def new_pair(number: int) -> None:
        await throttle.attempt(conn, f"{label}-new{number}", "10.0.0.1")

    async def known_pair(number: int) -> None:
        # Five attempts per pair: the first inserts the pair's row, the other four append to it.
        await throttle.attempt(conn, f"{label}-known{number // 5}", "10.0.0.2")

    async def locked_pair(_number: int) -> None:
        try:
            await throttle.attempt(conn, f"{label}-locked", "10.0.0.3")
        except LoginThrottled:
            pass

    async def right_password(number: int) -> None:
        attempt = await throttle.attempt(conn, f"{label}-right{number}", "10.0.0.4")
        await throttle.succeeded(conn, attempt)
        await conn.commit()

    for _ in range(throttle.limit):
        await locked_pair(0)
    return {
        "wrong password, new pair": await median(new_pair, attempts),
        "wrong password, known pair": await median(known_pair, attempts),
        "locked pair": await median(locked_pair, attempts),
        "right password (with the session's commit)": await median(right_password, attempts),
    }


async def bench(dsn: str, args: argparse.Namespace) -> None:
    reference = argon2_median(args.attempts)
    print(f"reference: argon2 verify of a wrong password {reference * 1000:.1f} ms")
    # The prune would otherwise run inside one timed attempt per minute; it is timed on its own below.
    throttle = LoginThrottle(prune_interval_s=1e9)
    pool = await db.open_pool(dsn, min_size=1, max_size=2, name="bench-throttle")
    try:
        async with pool.connection() as conn:
            empty = await measure(conn, throttle, args.attempts, "empty")
            await conn.execute(
                "INSERT INTO login_failures (username, client, failed_at, last_failed_at)"
                " SELECT 'spray' || n, '10.9.0.1', ARRAY[now() - interval '10 minutes'], now() - interval '10 minutes'"
                " FROM generate_series(1, %s) AS n",
                (args.rows,),
            )
            await conn.commit()
            full = await measure(conn, throttle, args.attempts, "full")
            started = time.perf_counter()
            pruned = await throttle.prune(conn)
            prune_s = time.perf_counter() - started
    finally:
        await pool.close()
    print(f"| path | table with the bench's rows only | with {args.rows:,} more rows | share of the argon2 check |")
    print("|---|---|---|---|")
    for name, seconds in empty.items():
        print(f"| {name} | {seconds * 1e6:.0f} µs | {full[name] * 1e6:.0f} µs | {max(seconds, full[name]) / reference:.2%} |")
    print(f"one prune, a full batch of {pruned:,} expired rows out of {args.rows:,}: {prune_s * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=2000, help="timed calls per figure; the median is printed")
    parser.add_argument("--rows", type=int, default=100_000, help="expired rows of other pairs added for the second column and the prune")
    args = parser.parse_args()
    if args.attempts < 10 or args.rows < 0:
        parser.error(f"--attempts must be at least 10 and --rows at least 0, got {args.attempts} and {args.rows}")
    print(machine_line())
    with PostgresServer() as pg:
        dsn, version = fresh_database(pg)
        print(f"database: PostgreSQL {version} on loopback")
        asyncio.run(bench(dsn, args))


if __name__ == "__main__":
    main()
