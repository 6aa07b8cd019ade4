"""The standing fuzz check of issue 14: mutated datagrams and device answers against a real
``fleetloop serve``, then liveness, RSS growth, the log and a clean client.

    .venv/bin/python -m benchmarks.fuzz_serve [--datagrams 1000000] [--minutes 10]
        [--seed 1] [--rate 8000] [--database-url URL] [--keep DIR]

Not part of the test suite (it runs for minutes); run it after changes to the parsers, the
CoAP layer, the DM or bootstrap server. Exit status 0 only when every check passed.

Seeds: every datagram of ``../shared/interop/interop-vectors.json`` (real wakaama and Anjay
bytes): the clients' requests (Register, Update, Send, Bootstrap-Request ...) and their answers
to the server's requests. Mutations (:func:`mutate`): bit and byte flips, insertions, deletions,
truncation, chunk duplication, splicing two seeds, header surgery (version, type, token length,
code), option surgery (huge option deltas/lengths, extended lengths), long numeric and NUL-laden
``Uri-Query`` values, random bytes. Targets: the DM CoAP port (most), the bootstrap CoAP port,
and the DTLS ports (random and mutated bytes: the handshake parser).

Device answers: ``--answer-devices`` fuzz devices register cleanly from their own sockets; the
harness keeps asking the API to read, write and observe them, and each request the server sends
them is answered with a mutated seed answer carrying the request's token and message id -- the
server's decoders (TLV, SenML JSON/CBOR, LwM2M CBOR, link format) meet corrupted device data.

Checks at the end: the process is alive; its RSS grew by less than ``--max-rss-growth`` MiB
(measured after a warm-up); the log holds no ``Traceback`` (each one is reported with the last
datagrams sent before it, written to ``--keep``); ``/health`` and ``/ready`` answer 200; a
clean simulated device registers over CoAP. Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

INTEROP = Path(__file__).resolve().parents[2] / "shared" / "interop" / "interop-vectors.json"


# -- seeds ----------------------------------------------------------------------------------------


@dataclass
class Seeds:
    dm_requests: list[bytes] = field(default_factory=list)
    bs_requests: list[bytes] = field(default_factory=list)
    answers: list[bytes] = field(default_factory=list)
    register: bytes = b""

    @property
    def everything(self) -> list[bytes]:
        return self.dm_requests + self.bs_requests + self.answers


def load_seeds(path: Path = INTEROP) -> Seeds:
    seeds = Seeds()
    for exchange in json.loads(path.read_text()):
        bootstrap = exchange["socket"].startswith("bs")
        request, response = exchange["request"], exchange.get("response")
        if exchange["direction"] == "client->server":
            raw = bytes.fromhex(request["raw_hex"])
            (seeds.bs_requests if bootstrap else seeds.dm_requests).append(raw)
            if not seeds.register and request.get("uri_path") == "/rd" and not bootstrap:
                seeds.register = raw
        elif response is not None:
            seeds.answers.append(bytes.fromhex(response["raw_hex"]))
    return seeds


# -- mutation -------------------------------------------------------------------------------------


def _option(delta: int, value: bytes) -> bytes:
    """One CoAP option with its extended delta/length encodings."""

    def nibble(n: int) -> tuple[int, bytes]:
        if n < 13:
            return n, b""
        if n < 269:
            return 13, bytes([n - 13])
        return 14, struct.pack("!H", min(n - 269, 0xFFFF))

    d, dx = nibble(delta)
    ln, lx = nibble(len(value))
    return bytes([(d << 4) | ln]) + dx + lx + value


def _weird_query(rng: random.Random) -> bytes:
    choices = [
        b"ep=" + b"9" * rng.choice((20, 400, 5000)),
        b"lt=" + b"9" * rng.choice((19, 20, 40, 5000)),
        b"ep=a\x00b",
        b"sms=\x00",
        b"ep=" + "dev-\u0430".encode(),
        b"ep=../..",
        b"b=" + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))),
        b"lwm2m=" + b"1." * rng.randrange(1, 200),
        b"ep=" + bytes([rng.randrange(256)]) * rng.randrange(1, 300),
    ]
    return rng.choice(choices)


def _header_surgery(data: bytearray, rng: random.Random) -> bytearray:
    if not data:
        return bytearray(rng.randbytes(4))
    which = rng.randrange(5)
    if which == 0:  # version / type / token length
        data[0] = rng.randrange(256)
    elif which == 1 and len(data) > 1:  # code
        data[1] = rng.choice(
            (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x1F, 0x45, 0xFF, rng.randrange(256))
        )
    elif which == 2:  # token length beyond the datagram
        data[0] = (data[0] & 0xF0) | rng.randrange(9, 16)
    elif which == 3 and len(data) > 3:  # message id
        data[2:4] = rng.randbytes(2)
    else:  # drop the payload marker or add one with nothing after it
        data += b"\xff" if rng.random() < 0.5 else b""
    return data


def _option_surgery(data: bytearray, rng: random.Random) -> bytearray:
    header = 4 + (data[0] & 0x0F if data else 0)
    head = data[: min(header, len(data))]
    which = rng.randrange(6)
    if which == 0:
        extra = _option(15, _weird_query(rng))  # Uri-Query
    elif which == 1:
        extra = _option(rng.randrange(0, 65000), rng.randbytes(rng.randrange(0, 40)))
    elif which == 2:
        extra = bytes([0xE0 | rng.randrange(15), 0xFF, 0xFF])  # huge delta, short datagram
    elif which == 3:
        extra = _option(27, struct.pack("!I", rng.randrange(1 << 32)))  # Block1, any value
    elif which == 4:
        extra = _option(12, struct.pack("!H", rng.randrange(1 << 16)))  # Content-Format
    else:
        extra = _option(60, b"\xff" * rng.randrange(1, 9))  # Size1, up to 2^64
    return head + extra + data[len(head) :]


def mutate(seed: bytes, rng: random.Random, other: bytes) -> bytes:
    """One mutation (sometimes stacked) of ``seed``; ``other`` is a splice partner."""
    data = bytearray(seed)
    for _ in range(1 if rng.random() < 0.7 else rng.randrange(2, 6)):
        kind = rng.randrange(12)
        if kind == 0 and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif kind == 1 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 2:
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randrange(1, 64))
        elif kind == 3 and data:
            i = rng.randrange(len(data))
            del data[i : i + rng.randrange(1, 32)]
        elif kind == 4 and data:
            del data[rng.randrange(len(data)) :]
        elif kind == 5 and data:
            i = rng.randrange(len(data))
            chunk = data[i : i + rng.randrange(1, 64)]
            data[i:i] = chunk * rng.randrange(1, 20)
        elif kind == 6:
            cut_a, cut_b = rng.randrange(len(data) + 1), rng.randrange(len(other) + 1)
            data = data[:cut_a] + other[cut_b:]
        elif kind == 7:
            data = _header_surgery(data, rng)
        elif kind == 8:
            data = _option_surgery(data, rng)
        elif kind == 9 and b"\xff" in data:  # payload replaced
            i = data.index(b"\xff")
            data = data[: i + 1] + rng.randbytes(rng.randrange(0, 600))
        elif kind == 10:
            data = bytearray(rng.randbytes(rng.randrange(0, 200)))
        else:
            for _ in range(rng.randrange(1, 8)):
                if data:
                    data[rng.randrange(len(data))] = rng.choice((0x00, 0xFF, 0x7F, 0x80))
    return bytes(data[:1500])


# -- the server under test ------------------------------------------------------------------------


def _fleetloop() -> list[str]:
    script = Path(sys.executable).parent / "fleetloop"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


class Serve:
    def __init__(self, work: Path, database_url: str | None) -> None:
        self.data_dir = work / "data"
        self.log_path = work / "serve.log"
        command = [
            *_fleetloop(),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--coap",
            "127.0.0.1:0",
            "--coaps",
            "127.0.0.1:0",
            "--bs-coap",
            "127.0.0.1:0",
            "--bs-coaps",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]
        if database_url:
            command += ["--database-url", database_url]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        api_file = self.data_dir / "api.json"
        while not api_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start:\n{self.log_path.read_text()}")
            time.sleep(0.1)
        time.sleep(0.2)
        self.info: dict[str, Any] = json.loads(api_file.read_text())
        bs_coap = (self.info.get("extra") or {}).get("bs_coap") or {}
        self.bs_coap = int(bs_coap.get("port", 0))

    def port(self, kind: str) -> int:
        if kind in ("coap", "coaps"):
            return int(self.info[kind]["port"])
        return self.bs_coap

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def api(self, prefix: str = "/v1") -> httpx.Client:
        return httpx.Client(
            base_url=self.info["url"] + prefix,
            headers={"Authorization": f"Bearer {self.info['token']}"},
            timeout=10.0,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


# -- device answers -------------------------------------------------------------------------------


class AnsweringDevice:
    """A registered endpoint whose every answer to the server is a mutated seed answer."""

    def __init__(self, name: str, seeds: Seeds, serve: Serve, rng: random.Random) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.seeds = seeds
        self.rng = rng
        self.server = ("127.0.0.1", serve.port("coap"))
        self.answered = 0

    def register(self) -> bool:
        query = f"ep={self.name}".encode()
        message = bytearray(b"\x42\x02\x12\x34\xaa\xbb")  # CON POST mid 0x1234 token aabb
        message += _option(11, b"rd") + _option(4, query) + _option(0, b"lt=600")
        message += b"\xff</1/0>,</3/0>,</3303/0>"
        self.sock.sendto(bytes(message), self.server)
        try:
            answer, _ = self.sock.recvfrom(2048)
        except TimeoutError:
            return False
        return len(answer) > 1 and answer[1] == 0x41  # 2.01 Created

    def serve_once(self) -> None:
        try:
            request, _ = self.sock.recvfrom(4096)
        except (TimeoutError, OSError):
            return
        if len(request) < 4:
            return
        tkl = request[0] & 0x0F
        token, mid = request[4 : 4 + tkl], request[2:4]
        seed = self.rng.choice(self.seeds.answers)
        if self.rng.random() < 0.15:  # anything at all
            answer = mutate(seed, self.rng, request)
        else:  # a matching ACK whose code, options or payload are corrupted
            body = seed[4 + (seed[0] & 0x0F) :] if len(seed) >= 4 else b""
            if self.rng.random() < 0.8:
                body = mutate(body, self.rng, self.rng.choice(self.seeds.answers))
            code = seed[1] if self.rng.random() < 0.9 else self.rng.randrange(256)
            answer = bytes([0x60 | len(token), code]) + mid + token + body
        self.sock.sendto(bytes(answer), self.server)
        self.answered += 1


FORMATS = ["tlv", "senml-json", "senml-cbor", "lwm2m-cbor", "text", "json"]


def drive_device_answers(
    serve: Serve, devices: list[AnsweringDevice], stop: threading.Event
) -> dict[str, int]:
    """Keep the server asking the answering devices things, from a thread."""
    counts: collections.Counter[str] = collections.Counter()
    paths = ["3/0", "3303", "1/0", "3/0/9", "3303/0/5700", "0", "3"]
    with serve.api() as api:
        while not stop.is_set():
            device = random.choice(devices)
            path = random.choice(paths)
            kind = random.randrange(4)
            try:
                base = f"/devices/{device.name}"
                if kind == 0:
                    answer = api.get(f"{base}/data/{path}", params={"timeout": 2})
                elif kind == 1:
                    answer = api.get(
                        f"{base}/data/{path}",
                        params={"format": random.choice(FORMATS), "timeout": 2},
                    )
                elif kind == 2:
                    answer = api.put(
                        f"{base}/data/3/0/13", json={"value": 1}, params={"timeout": 2}
                    )
                else:
                    answer = api.post(f"{base}/observe/{path}", params={"timeout": 2})
                counts[str(answer.status_code)] += 1
            except httpx.HTTPError as err:
                counts[type(err).__name__] += 1
    return dict(counts)


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Result:
    datagrams: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    by_target: dict[str, int] = field(default_factory=dict)
    device_answers: int = 0
    api_calls: dict[str, int] = field(default_factory=dict)
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    rss_max_mib: float = 0.0
    alive: bool = False
    tracebacks: int = 0
    error_lines: int = 0
    health: int = 0
    ready: int = 0
    clean_client_registered: bool = False
    crash_files: list[str] = field(default_factory=list)
    passed: bool = False


def clean_client_registers(serve: Serve) -> bool:
    from simulators.runner import SimulatedDevice

    async def run() -> bool:
        uri = f"coap://127.0.0.1:{serve.port('coap')}"
        async with SimulatedDevice("fuzz-clean-client", uri) as device:
            await asyncio.wait_for(device.wait_registered(), 30)
            return True

    try:
        return asyncio.run(run())
    except Exception:
        return False


def run(args: argparse.Namespace) -> Result:
    rng = random.Random(args.seed)
    seeds = load_seeds()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fuzz-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o700)
    serve = Serve(work, args.database_url)
    result = Result()
    try:
        targets = [("coap", 0.75), ("bs_coap", 0.15), ("coaps", 0.10)]
        if not serve.bs_coap:
            targets = [("coap", 0.85), ("coaps", 0.15)]
        ports = {name: serve.port(name) for name, _ in targets}
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
        for s in senders:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        devices = [
            AnsweringDevice(f"fuzz-dev-{i}", seeds, serve, rng) for i in range(args.answer_devices)
        ]
        devices = [d for d in devices if d.register()]
        stop = threading.Event()
        api_counts: dict[str, int] = {}

        def answer_loop() -> None:
            by_socket = {d.sock: d for d in devices}
            while not stop.is_set() and by_socket:
                readable, _, _ = select.select(list(by_socket), [], [], 0.2)
                for sock in readable:
                    by_socket[sock].serve_once()

        def api_loop() -> None:
            for key, count in drive_device_answers(serve, devices, stop).items():
                with api_lock:
                    api_counts[key] = api_counts.get(key, 0) + count

        api_lock = threading.Lock()
        threads = [threading.Thread(target=answer_loop, daemon=True)]
        if devices:
            threads += [
                threading.Thread(target=api_loop, daemon=True) for _ in range(args.api_threads)
            ]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        result.rss_start_mib = result.rss_max_mib = serve.rss_kib() / 1024
        recent: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=2000)
        started = time.monotonic()
        deadline = started + args.minutes * 60
        by_target: collections.Counter[str] = collections.Counter()
        tracebacks_seen = 0
        next_check = started + 1.0
        interval = 1.0 / args.rate if args.rate > 0 else 0.0
        next_send = started
        pools = {
            "coap": seeds.dm_requests + seeds.answers,
            "bs_coap": seeds.bs_requests or seeds.dm_requests,
            "coaps": seeds.everything,
        }
        names = [n for n, _ in targets]
        weights = [w for _, w in targets]
        while result.datagrams < args.datagrams and time.monotonic() < deadline:
            target = rng.choices(names, weights)[0]
            pool = pools[target]
            data = mutate(rng.choice(pool), rng, rng.choice(pool))
            with contextlib.suppress(OSError):  # a full send buffer drops it, as a network would
                rng.choice(senders).sendto(data, ("127.0.0.1", ports[target]))
            recent.append((target, data))
            by_target[target] += 1
            result.datagrams += 1
            if interval:
                next_send += interval
                delay = next_send - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 1.0
                if not serve.alive():
                    break
                result.rss_max_mib = max(result.rss_max_mib, serve.rss_kib() / 1024)
                count = serve.log().count("Traceback")
                if count > tracebacks_seen:
                    tracebacks_seen = count
                    crash = work / f"crash-{len(result.crash_files) + 1}.jsonl"
                    with crash.open("w") as out:
                        for name, raw in recent:
                            out.write(json.dumps({"target": name, "hex": raw.hex()}) + "\n")
                    result.crash_files.append(str(crash))
        result.seconds = time.monotonic() - started
        result.rate = result.datagrams / result.seconds if result.seconds else 0.0
        result.by_target = dict(by_target)
        stop.set()
        for thread in threads:
            thread.join(15)
        result.api_calls = api_counts
        result.device_answers = sum(d.answered for d in devices)
        time.sleep(2.0)  # let queued work drain before the final measurements
        result.alive = serve.alive()
        if result.alive:
            result.rss_end_mib = serve.rss_kib() / 1024
            result.rss_max_mib = max(result.rss_max_mib, result.rss_end_mib)
            with serve.api(prefix="") as root:
                result.health = root.get("/health").status_code
                result.ready = root.get("/ready").status_code
            result.clean_client_registered = clean_client_registers(serve)
        log = serve.log()
        result.tracebacks = log.count("Traceback")
        result.error_lines = sum(1 for line in log.splitlines() if '"level": "error"' in line)
        growth = result.rss_end_mib - result.rss_start_mib
        result.passed = (
            result.alive
            and result.tracebacks == 0
            and growth < args.max_rss_growth
            and result.health == 200
            and result.ready == 200
            and result.clean_client_registered
        )
        return result
    finally:
        serve.stop()
        if not args.keep and result.passed:
            shutil.rmtree(work, ignore_errors=True)
        elif not result.passed:
            print(f"kept the run for inspection: {work}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datagrams", type=int, default=1_000_000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=8000.0, help="datagrams/s (0: unpaced)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--answer-devices", type=int, default=32)
    parser.add_argument("--api-threads", type=int, default=8, help="API callers driving them")
    parser.add_argument("--max-rss-growth", type=float, default=150.0, help="MiB")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--keep", default=None, help="keep the data dir, log and crash inputs here")
    args = parser.parse_args()
    result = run(args)
    growth = result.rss_end_mib - result.rss_start_mib
    print("| figure | value |\n|---|---|")
    rows = [
        (
            "datagrams sent",
            f"{result.datagrams:,} in {result.seconds:.0f} s ({result.rate:,.0f}/s)",
        ),
        ("by target", ", ".join(f"{k} {v:,}" for k, v in sorted(result.by_target.items()))),
        ("mutated device answers", f"{result.device_answers:,}"),
        ("API calls driving them", json.dumps(result.api_calls, sort_keys=True)),
        (
            "RSS start / end / max",
            f"{result.rss_start_mib:.0f} / {result.rss_end_mib:.0f} / "
            f"{result.rss_max_mib:.0f} MiB (growth {growth:+.0f})",
        ),
        ("alive, /health, /ready", f"{result.alive}, {result.health}, {result.ready}"),
        ("tracebacks in the log", str(result.tracebacks)),
        ("error lines in the log", str(result.error_lines)),
        ("clean client registers", str(result.clean_client_registered)),
        ("verdict", "PASS" if result.passed else "FAIL"),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(json.dumps(asdict(result)))
    sys.exit(0 if result.passed else 1)


if __name__ == "__main__":
    main()
