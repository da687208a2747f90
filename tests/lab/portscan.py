"""A bounded TCP connect scan, run inside a lab container (``python3 - TARGETS...``, this file on stdin).

Standard library only (the lab image has python3 and nothing else). Non-blocking connects in batches,
one epoll, a short timeout per batch; ports without an answer get a second, slower try. A port is
``open`` (connect succeeded), ``refused`` (reset or an ICMP error) or ``silent`` (no answer at all).
Prints one JSON object: ``{target: {"open": [...], "refused": N, "silent": N, "seconds": S}}``.

Usage: ``python3 - [--ports LOW-HIGH|P,P,...] [--batch N] [--timeout S] TARGET...``
"""

from __future__ import annotations

import errno
import json
import resource
import select
import socket
import sys
import time


def parse_ports(spec: str) -> list[int]:
    ports: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        ports += range(int(low), int(high or low) + 1)
    return [p for p in ports if 0 < p < 65536]


def scan_batch(target: str, ports: list[int], timeout: float) -> tuple[list[int], int, list[int]]:
    poller = select.epoll()
    pending: dict[int, tuple[socket.socket, int]] = {}
    opened: list[int] = []
    refused = 0
    for port in ports:
        sock = socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((target, port))
        if code == 0:
            opened.append(port)
            sock.close()
        elif code in (errno.EINPROGRESS, errno.EAGAIN):
            pending[sock.fileno()] = (sock, port)
            poller.register(sock.fileno(), select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP)
        else:
            refused += 1
            sock.close()
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(max(0.0, deadline - time.monotonic())):
            sock, port = pending.pop(fd)
            poller.unregister(fd)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                opened.append(port)
            else:
                refused += 1
            sock.close()
    silent = [port for _, port in pending.values()]
    for sock, _ in pending.values():
        sock.close()
    poller.close()
    return opened, refused, silent


def scan_target(target: str, ports: list[int], batch: int, timeout: float) -> dict[str, object]:
    start = time.monotonic()
    opened: list[int] = []
    refused = 0
    silent_ports: list[int] = []
    for i in range(0, len(ports), batch):
        o, r, s = scan_batch(target, ports[i : i + batch], timeout)
        opened += o
        refused += r
        silent_ports += s
    # A busy machine can be slow to answer: ports without an answer get a second, slower try.
    retry, silent_ports = silent_ports, []
    for i in range(0, len(retry), 200):
        o, r, s = scan_batch(target, retry[i : i + 200], timeout * 5)
        opened += o
        refused += r
        silent_ports += s
    silent = len(silent_ports)
    return {
        "open": sorted(opened),
        "refused": refused,
        "silent": silent,
        "seconds": round(time.monotonic() - start, 2),
    }


def main(argv: list[str]) -> int:
    ports, batch, timeout, targets = list(range(1, 65536)), 2000, 1.0, []
    args = iter(argv)
    for arg in args:
        if arg == "--ports":
            ports = parse_ports(next(args))
        elif arg == "--batch":
            batch = int(next(args))
        elif arg == "--timeout":
            timeout = float(next(args))
        else:
            targets.append(arg)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, batch + 64) if hard != resource.RLIM_INFINITY else batch + 64
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    batch = min(batch, wanted - 64)
    report = {target: scan_target(target, ports, batch, timeout) for target in targets}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
