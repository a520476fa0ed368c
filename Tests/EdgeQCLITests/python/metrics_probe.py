#!/usr/bin/env python3
"""Checks EdgeQ's /metrics endpoint from the outside, with code EdgeQ did not write.

  metrics_probe.py parse URL          prometheus_client's own parser reads the exposition;
                                      prints every sample as JSON (the caller compares them
                                      with what it scraped itself).
  metrics_probe.py fuzz HOST PORT N SEED
                                      N malformed or hostile requests, each followed by a
                                      plain GET /healthz that must be answered; then a
                                      slow client that dribbles one byte at a time while
                                      a scraper asks for /metrics. Prints a JSON verdict.
"""
import json
import random
import socket
import sys
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def parse(url):
    text = urllib.request.urlopen(url, timeout=10).read().decode("utf-8")
    families = []
    samples = []
    for fam in text_string_to_metric_families(text):
        families.append({"name": fam.name, "type": fam.type, "help": fam.documentation})
        for s in fam.samples:
            samples.append({"name": s.name, "labels": s.labels, "value": repr(float(s.value))})
    print(json.dumps({"families": families, "samples": samples}))


def request(host, port, payload, shutdown_write=True, read_timeout=5.0):
    """Sends raw bytes, returns what came back (b'' when the server closed without a word)."""
    with socket.create_connection((host, port), timeout=read_timeout) as s:
        if payload:
            s.sendall(payload)
        if shutdown_write:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except (socket.timeout, ConnectionResetError):
            pass
        return b"".join(chunks)


def healthy(host, port):
    try:
        r = request(host, port, b"GET /healthz HTTP/1.0\r\n\r\n", read_timeout=10.0)
        return r.startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def hostile_requests(rng, n):
    fixed = [
        ("empty", b"", True),
        ("no newline", b"GET /metrics HTTP/1.0", True),
        ("lf only", b"GET /metrics HTTP/1.0\n\n", True),
        ("post", b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", True),
        ("head", b"HEAD /metrics HTTP/1.0\r\n\r\n", True),
        ("query", b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", True),
        ("nul bytes", b"GET /met\x00rics HTTP/1.0\r\n\r\n", True),
        ("not utf-8", b"GET /\xff\xfe\xfd HTTP/1.0\r\n\r\n", True),
        ("long line", b"GET /" + b"a" * 100_000 + b" HTTP/1.0\r\n\r\n", True),
        ("huge header", b"GET /metrics HTTP/1.0\r\nX: " + b"b" * 20_000 + b"\r\n\r\n", True),
        ("only spaces", b" " * 5000, True),
        ("tls hello", bytes([0x16, 0x03, 0x01, 0x02, 0x00]) + bytes(rng.getrandbits(8) for _ in range(512)), True),
        ("open, never speak", b"", False),
        ("absolute uri", b"GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n", True),
        ("pipelined", b"GET /healthz HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n", True),
    ]
    out = list(fixed)
    alphabet = b"GET /metricshz\r\n :HTP1.0?=&%\x00\xff"
    while len(out) < n:
        kind = rng.randrange(3)
        if kind == 0:
            body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 3000)))
        elif kind == 1:
            body = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 200)))
        else:
            base = bytearray(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            for _ in range(rng.randrange(1, 6)):
                i = rng.randrange(len(base))
                base[i] = rng.getrandbits(8)
            body = bytes(base)
        out.append((f"random-{len(out)}", body, rng.random() < 0.8))
    return out[:n] if n >= len(fixed) else out


def fuzz(host, port, n, seed):
    rng = random.Random(seed)
    failures = []
    answered = 0
    for name, payload, shut in hostile_requests(rng, n):
        try:
            # A client that never speaks: the server must give up on it by itself.
            request(host, port, payload, shutdown_write=shut, read_timeout=10.0)
        except OSError:
            pass
        if healthy(host, port):
            answered += 1
        else:
            failures.append(name)

    # A slow client: one byte every 0.3 s for 12 s, never finishing its request head.
    # While it dribbles, a scraper must still get /metrics (within its own 8 s timeout).
    stop = threading.Event()

    def dribble():
        try:
            with socket.create_connection((host, port), timeout=20) as s:
                for b in b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"z" * 100:
                    if stop.is_set():
                        return
                    s.sendall(bytes([b]))
                    time.sleep(0.3)
        except OSError:
            pass

    t = threading.Thread(target=dribble)
    t.start()
    time.sleep(0.5)
    slow_scrapes_ok = 0
    slow_scrapes = 3
    for _ in range(slow_scrapes):
        try:
            text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=8).read()
            if b"# TYPE" in text:
                slow_scrapes_ok += 1
        except OSError:
            pass
    stop.set()
    t.join()
    print(json.dumps({"sent": n, "answered_after": answered, "failures": failures,
                      "slow_client_scrapes": slow_scrapes, "slow_client_scrapes_ok": slow_scrapes_ok,
                      "healthy_at_end": healthy(host, port)}))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "parse":
        parse(sys.argv[2])
    elif len(sys.argv) == 6 and sys.argv[1] == "fuzz":
        fuzz(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(__doc__)
