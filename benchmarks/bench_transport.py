"""CoAP transport benchmark: requests/s and server CPU per request, as ratios to a raw UDP echo.

    .venv/bin/python -m benchmarks.bench_transport [--duration 5] [--window 16] [--devices 4]
        [--repeat 1] [--cases a,a2,c] [--handshake-parallel 16]
    .venv/bin/python -m benchmarks.bench_transport parking [--sessions 10000]
        [--restart-sessions 100000] [--close-live]

Runs, in one go and on loopback only: (a) a bare asyncio UDP echo (asyncio's datagram
endpoint), (a2) the same echo on the socket loop fleetloop's transports use, (b) aiocoap's
server stack, (c) fleetloop's exchange layer over UDP, (d) over DTLS-PSK (steady state), (e)
DTLS-PSK full handshakes/s. Each server is its own process; the load client is another process
(the same UDP client for (a), (a2), (b), (c)). Figures are reported beside (a) and (a2) from the
same run so ratios survive a noisy machine; with ``--repeat`` the table shows medians and
ranges. Server CPU comes from /proc, client CPU from the client itself, and the busy fractions
(CPU seconds per wall second) say which side limited the rate: a side near 1.00 did. The
fleetloop servers report what their core saw (duplicates must be 0: the client never re-uses a
Message ID within a peer, see ``loadgen.ROTATE_AFTER``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.loadgen import process_cpu_seconds

HERE = Path(__file__).resolve().parent


def _spawn_server(mode: str, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp / f"{mode}.port"
    port_file.unlink(missing_ok=True)  # (d) and (e) share a server mode: never read a stale port
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_transport", "serve", mode, str(port_file)],
        cwd=HERE.parent,
    )
    for _ in range(200):
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"server {mode} exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server {mode} did not start")


def _run_client(kind: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_transport",
            "load",
            kind,
            str(port),
            str(args.duration),
            str(args.window),
            str(args.handshake_parallel if kind == "dtls-handshake" else args.devices),
        ],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=args.duration + 60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(mode: str, client: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    proc, port = _spawn_server(mode, tmp)
    try:
        time.sleep(0.3)
        cpu0 = process_cpu_seconds(proc.pid)
        result = _run_client(client, port, args)
        cpu1 = process_cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    stats_file = (tmp / f"{mode}.port").with_suffix(".stats")
    if stats_file.exists():
        result["server_stats"] = json.loads(stats_file.read_text())
        stats_file.unlink()
    done = result["completed"]
    nan = float("nan")
    result["server_cpu_s"] = cpu1 - cpu0
    result["cpu_us_per_op"] = (cpu1 - cpu0) / done * 1e6 if done else nan
    result["client_cpu_us_per_op"] = result.get("client_cpu_s", nan) / done * 1e6 if done else nan
    # Busy fraction of each side over the window: the side near 1.0 limits the rate.
    result["server_busy"] = (cpu1 - cpu0) / result["seconds"]
    result["client_busy"] = result.get("client_cpu_s", nan) / result["seconds"]
    return result


CASES = [
    ("a", "raw UDP echo", "raw-echo", "udp"),
    ("a2", "raw UDP echo, fleetloop's socket loop", "lean-echo", "udp"),
    ("b", "aiocoap server stack", "aiocoap", "udp"),
    ("c", "fleetloop exchange layer, UDP", "fleetloop-udp", "udp"),
    ("d", "fleetloop, DTLS-PSK steady state", "fleetloop-dtls", "dtls"),
    ("e", "fleetloop, DTLS-PSK full handshakes", "fleetloop-dtls", "dtls-handshake"),
]


def run_cases(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Every selected case once; each row carries its ratios to (a) and (a2) of this run."""
    from benchmarks.servers import SERVERS

    rows: list[dict[str, Any]] = []
    for key, label, mode, client in CASES:
        if args.cases and key not in args.cases.split(","):
            continue
        if mode not in SERVERS:
            print(f"({key}) {label}: not available yet", file=sys.stderr)
            continue
        r = measure(mode, client, args, tmp)
        rows.append({"case": key, "label": label, **r})
        print(
            f"({key}) {label}: {r['rate']:.0f}/s, {r['cpu_us_per_op']:.1f} us CPU/op,"
            f" client {r['client_cpu_us_per_op']:.1f} us/op, busy server"
            f" {r['server_busy']:.2f} client {r['client_busy']:.2f}, lost {r['lost']:.0f}",
            file=sys.stderr,
        )
        if "server_stats" in r:
            core = r["server_stats"]["core"]
            print(
                f"    server core: received {core['received']}, duplicates"
                f" {core['duplicates']}, malformed {core['malformed']},"
                f" peers {r['server_stats']['peers']}",
                file=sys.stderr,
            )
    rates = {r["case"]: r["rate"] for r in rows}
    for r in rows:
        for base in ("a", "a2"):
            if rates.get(base):
                r[f"ratio_{base}"] = r["rate"] / rates[base]
    return rows


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread(values: list[float], fmt: str) -> str:
    """The median, with the range over runs when there were several."""
    if not values:
        return "-"
    text = format(_median(values), fmt)
    if len(values) > 1:
        text += f" ({format(min(values), fmt)} to {format(max(values), fmt)})"
    return text


def main_bench(args: argparse.Namespace) -> None:
    runs: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmpname:
        tmp = Path(tmpname)
        for i in range(args.repeat):
            if args.repeat > 1:
                print(f"-- run {i + 1}/{args.repeat}", file=sys.stderr)
            runs.append(run_cases(args, tmp))
    keys = [r["case"] for r in runs[0]]
    print()
    print(
        "| case | rate (/s) | ratio to (a) | ratio to (a2) | server CPU per op (us)"
        " | client CPU per op (us) | server / client busy | lost |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in keys:
        rows = [r for run in runs for r in run if r["case"] == key]

        def col(name: str, rows: list[dict[str, Any]] = rows) -> list[float]:
            return [r[name] for r in rows if name in r]

        unit = "handshakes/s" if key == "e" else "req/s"
        print(
            f"| ({key}) {rows[0]['label']} | {_spread(col('rate'), '.0f')} {unit}"
            f" | {_spread(col('ratio_a'), '.2f')} | {_spread(col('ratio_a2'), '.2f')}"
            f" | {_spread(col('cpu_us_per_op'), '.1f')}"
            f" | {_spread(col('client_cpu_us_per_op'), '.1f')}"
            f" | {_median(col('server_busy')):.2f} / {_median(col('client_busy')):.2f}"
            f" | {sum(col('lost')):.0f} |"
        )
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "window": args.window,
        "devices": args.devices,
        "handshake_parallel": args.handshake_parallel,
        "repeat": args.repeat,
    }
    print()
    print("```json")
    print(json.dumps({"meta": meta, "runs": runs}, indent=1))
    print("```")


# -- DTLS session parking (issue 13) ------------------------------------------------------------

PARKING_KEY = b"bench-parking-key"


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _trim() -> None:
    """Return freed heap to the OS (glibc keeps it otherwise), so RSS shows what is held."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def _parking_server(port_file: Path, data_dir: Path, persist_interval: float = 1.0) -> None:
    """The server side of ``parking``: a DtlsServer with a SQLite session store, driven by
    JSON commands on stdin (one per line), answering one JSON line each on stdout."""
    import asyncio

    from lwm2m.store import Store
    from lwm2m.store.dtls_sessions import StoreDtlsSessions
    from lwm2m.store.secrets import bind, load_box
    from lwm2m.transport import DtlsServer, DtlsServerConfig, MappingPskStore, Peer
    from lwm2m.transport.parking import decode_blob, parked_blob, peer_key

    class Echo:
        server: DtlsServer | None = None

        def datagram_received(self, data: bytes, peer: Peer) -> None:
            assert self.server is not None
            self.server.send(data, peer)

    _trim()
    rss_empty = _rss_kib()
    store = await asyncio.to_thread(Store.open, None, data_dir)
    await asyncio.to_thread(store.create_schema)
    bind(store, load_box(data_dir))  # blobs sealed, as in serve (data_dir/secrets.key)
    sink = Echo()
    session_store = StoreDtlsSessions(store)
    config = DtlsServerConfig(
        psk_store=MappingPskStore({b"bench": PARKING_KEY}),
        park_after=None,  # parked on command
        max_sessions=10**7,
        max_handshakes=10_000,
        session_store=session_store,
        idle_timeout=86_400.0,
        persist_interval=persist_interval,
    )
    _trim()
    rss_before = _rss_kib()
    t0 = time.perf_counter()
    server = await DtlsServer.create(sink, config, "127.0.0.1", 0)
    load_s = time.perf_counter() - t0
    sink.server = server
    _trim()
    port_file.write_text(str(server.local_address[1]))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(**fields: Any) -> None:
        print(json.dumps(fields), flush=True)

    answer(
        started=True,
        rss_kib_empty=rss_empty,
        rss_kib_before_load=rss_before,
        rss_kib_after_load=_rss_kib(),
        loaded=server.parked_count,
        load_s=load_s,
    )
    while line := await reader.readline():
        command = json.loads(line)
        op = command["op"]
        if op == "stats":
            _trim()
            answer(live=server.session_count, parked=server.parked_count, rss_kib=_rss_kib())
        elif op == "park":
            sessions = list(server._established.values())
            times = []
            for s in sessions:
                t = time.perf_counter()
                assert server._park(s)
                times.append(time.perf_counter() - t)
            entries = list(server._parked.values())
            blobs = [len(parked_blob(entry)) for entry in entries]
            conns = [len(decode_blob(parked_blob(entry)).connection) for entry in entries]
            entry_bytes = [sys.getsizeof(entry) for entry in entries]
            del entries
            del sessions, s  # the freed sessions' buffers go now
            _trim()
            answer(
                parked=len(times),
                park_us=statistics.median(times) * 1e6,
                conn_bytes=statistics.median(conns),
                blob_bytes=statistics.median(blobs),
                entry_bytes=statistics.median(entry_bytes),
                rss_kib=_rss_kib(),
            )
        elif op == "restore":
            addresses = list(server._parked)[: command["n"]]
            times = []
            for addr in addresses:
                t = time.perf_counter()
                resumed = server._unpark(addr)
                times.append(time.perf_counter() - t)
                assert resumed is not None
            for addr in addresses:  # back to parked
                assert server._park(server._established[addr])
            answer(restored=len(times), restore_us=statistics.median(times) * 1e6)
        elif op == "persist":  # what a flush of every session costs the store's writer
            everything = {
                peer_key(addr): parked_blob(entry) for addr, entry in server._parked.items()
            }
            t = time.perf_counter()
            await session_store.save(everything)
            per_row = (time.perf_counter() - t) / len(everything) * 1e6
            answer(rows=len(everything), write_us_per_row=per_row)
        elif op == "clone":  # copies of the real sessions under new keys (10.x.y.z), sealed
            entries = list(server._parked.values())
            total = command["total"]
            for start in range(0, total - len(entries), 10_000):
                await session_store.save(
                    {
                        f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} 5684": parked_blob(
                            entries[i % len(entries)]
                        )
                        for i in range(start, min(start + 10_000, total - len(entries)))
                    }
                )
            del entries
            answer(cloned=total)
        elif op == "close":
            t = time.perf_counter()
            server.close()
            close_call = time.perf_counter() - t
            await server.wait_closed()
            await store.flush()
            answer(closed=True, write_s=time.perf_counter() - t, close_call_s=close_call)
            break
    await store.aclose()


async def _parking_handshakes(port: int, sessions: int, parallel: int) -> float:
    """``sessions`` DTLS-PSK devices, each from its own loopback address (127.1.x.y), that
    handshake, exchange one record and go away (the server keeps their sessions)."""
    import asyncio

    from lwm2m.transport import DtlsClient, DtlsClientConfig, Peer

    class Sink:
        def __init__(self) -> None:
            self.got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def datagram_received(self, data: bytes, peer: Peer) -> None:
            if not self.got.done():
                self.got.set_result(data)

    config = DtlsClientConfig(psk=(b"bench", PARKING_KEY))

    async def one(i: int) -> None:
        sink = Sink()
        local = (f"127.1.{i // 250}.{i % 250 + 1}", 0)
        client = await DtlsClient.connect(sink, "127.0.0.1", port, config, local_addr=local)
        try:
            client.send(b"\x50\x01\x00\x01hello", client.peer)
            await asyncio.wait_for(sink.got, 10)
        finally:
            client.abort()

    t0 = time.perf_counter()
    todo = iter(range(sessions))

    async def worker() -> None:
        for i in todo:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return time.perf_counter() - t0


def main_parking(args: argparse.Namespace) -> None:
    """Bytes, microseconds and RSS of parked DTLS sessions (see docs/BENCHMARKS.md)."""
    import asyncio

    with tempfile.TemporaryDirectory() as tmpname:
        tmp = Path(tmpname)

        def spawn() -> tuple[subprocess.Popen[str], dict[str, Any], int]:
            port_file = tmp / "parking.port"
            port_file.unlink(missing_ok=True)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.bench_transport",
                    "parking-serve",
                    str(port_file),
                    str(tmp),
                    str(args.persist_interval),
                ],
                cwd=HERE.parent,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            started = json.loads(proc.stdout.readline())
            return proc, started, int(port_file.read_text())

        def ask(proc: subprocess.Popen[str], **command: Any) -> dict[str, Any]:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline())  # type: ignore[no-any-return]

        proc, started, port = spawn()
        took = asyncio.run(_parking_handshakes(port, args.sessions, args.handshake_parallel))
        live = ask(proc, op="stats")
        if args.close_live:
            main_close_live(args, spawn, ask, proc, live, took)
            return
        parked = ask(proc, op="park")
        restore = ask(proc, op="restore", n=min(1000, args.sessions))
        persist = [ask(proc, op="persist")["write_us_per_row"] for _ in range(3)]
        closed = ask(proc, op="close")
        proc.wait(30)
        proc2, loaded, _ = spawn()
        big: dict[str, Any] = {}
        if args.restart_sessions > args.sessions:
            ask(proc2, op="clone", total=args.restart_sessions)
        ask(proc2, op="close")
        proc2.wait(60)
        if args.restart_sessions > args.sessions:
            proc3, big, _ = spawn()
            ask(proc3, op="close")
            proc3.wait(60)
    n = args.sessions
    base = started["rss_kib_after_load"]
    rows = {
        "sessions": n,
        "handshakes_per_s": n / took,
        "live_sessions": live["live"],
        "rss_live_kib_per_session": (live["rss_kib"] - base) / n,
        "mbedtls_state_bytes": parked["conn_bytes"],
        "stored_blob_bytes": parked["blob_bytes"],
        "parked_entry_object_bytes": parked["entry_bytes"],
        "park_us": parked["park_us"],
        "restore_us": restore["restore_us"],
        "rss_after_parking_kib_per_session": (parked["rss_kib"] - base) / n,
        "store_write_us_per_session": statistics.median(persist),
        "graceful_close_write_s": closed["write_s"],
        "restart_loaded": loaded["loaded"],
        "restart_load_s": loaded["load_s"],
        "rss_restarted_kib_per_session": (
            loaded["rss_kib_after_load"] - loaded["rss_kib_before_load"]
        )
        / n,
    }
    if big:
        rows["restart_big_loaded"] = big["loaded"]
        rows["restart_big_load_s"] = big["load_s"]
        rows["rss_restarted_big_kib_per_session"] = (
            big["rss_kib_after_load"] - big["rss_kib_before_load"]
        ) / big["loaded"]
        rows["rss_restarted_big_total_mib"] = (
            big["rss_kib_after_load"] - big["rss_kib_empty"]
        ) / 1024
    print("| figure | value |")
    print("|---|---:|")
    for name, value in rows.items():
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"| {name} | {text} |")
    print()
    print("```json")
    print(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"), **rows}))
    print("```")


def main_close_live(
    args: argparse.Namespace,
    spawn: Any,
    ask: Any,
    proc: subprocess.Popen[str],
    live: dict[str, Any],
    took: float,
) -> None:
    """A graceful stop with every session live: how long ``close()`` + ``wait_closed()``
    take to park and store them all, and whether the next process loads every one."""
    closed = ask(proc, op="close")
    proc.wait(60)
    proc2, loaded, _ = spawn()
    ask(proc2, op="close")
    proc2.wait(60)
    rows = {
        "sessions": args.sessions,
        "handshakes_per_s": args.sessions / took,
        "live_sessions_at_stop": live["live"],
        "graceful_stop_s": closed["write_s"],
        "graceful_stop_close_call_s": closed.get("close_call_s", float("nan")),
        "loaded_by_next_process": loaded["loaded"],
        "lost": live["live"] - loaded["loaded"],
    }
    print("| figure | value |")
    print("|---|---:|")
    for name, value in rows.items():
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"| {name} | {text} |")
    print()
    print("```json")
    print(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"), **rows}))
    print("```")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "parking-serve":
        import asyncio

        asyncio.run(_parking_server(Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "parking":
        parser = argparse.ArgumentParser(description=main_parking.__doc__)
        parser.add_argument("parking")
        parser.add_argument("--sessions", type=int, default=10_000)
        parser.add_argument("--handshake-parallel", type=int, default=32)
        parser.add_argument(
            "--restart-sessions",
            type=int,
            default=0,
            help="also restart with this many stored sessions (copies of the real ones)",
        )
        parser.add_argument(
            "--persist-interval",
            type=float,
            default=1.0,
            help="the server's persist_interval (a long one: every session is new at the stop)",
        )
        parser.add_argument(
            "--close-live",
            action="store_true",
            help="instead: stop gracefully with every session live; time it, count the loss",
        )
        main_parking(parser.parse_args())
        return
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        from benchmarks.servers import run

        run(sys.argv[2], Path(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        from benchmarks.clients import run_client

        kind, port, duration, window, devices = sys.argv[2:7]
        print(json.dumps(run_client(kind, int(port), float(duration), int(window), int(devices))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per case")
    parser.add_argument("--window", type=int, default=16, help="requests in flight per device")
    parser.add_argument("--devices", type=int, default=4, help="client sockets (peers)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run every case N times; report medians (ranges)"
    )
    parser.add_argument(
        "--handshake-parallel",
        type=int,
        default=16,
        help="handshakes in progress at once in (e) (a handshake is 3 round trips: a few in"
        " parallel leave both sides waiting)",
    )
    parser.add_argument("--cases", default="", help="subset, e.g. a,c (default: all)")
    main_bench(parser.parse_args())


if __name__ == "__main__":
    main()
