#!/usr/bin/env python3
"""Memory held per client connection, plain HTTP on 127.0.0.1 (python3 stdlib only).

  conns.py idle PORT MASTERPID N1,N2,... [HOST]
      Open keep-alive connections to 127.0.0.1:PORT, one GET /small on each, and leave them idle:
      first N1, then more up to N2 in all, and so on (all stay open). Prints one line per step,
      "n rss_kib workers_rss_kib", starting with n = 0 (before the first connection); each
      reading is taken 3 s after the step's last answer. rss is VmRSS summed over the proxy's
      master and all its descendants, workers_rss over the descendants only. Fails if the proxy
      closed any connection before the last reading.

  conns.py spike PORT MASTERPID N WAIT [HOST]
      Open N connections, make one GET /small on each, then send on each the first half of a
      second request head (an unfinished header line: the proxy holds a partly read head); read
      the workers' RSS (the "peak"), close all N, wait WAIT seconds and read it again. Prints
      "workers_start workers_peak workers_after n" (KiB).

  conns.py requests PORT N C PATH [HOST]
      Exactly N keep-alive GET PATH requests over C connections (each connection sends its next
      request when the previous answer is complete: no pipelining), for bench/callgrind.sh, where a
      fixed request count matters more than speed. Every answer must be a 200 with a
      Content-Length body; prints "N seconds".

Connections are opened in batches of 500 (below the 1024 listen backlog both proxies use); the
process raises its own RLIMIT_NOFILE to N + 100 when the hard limit allows.
"""
import os
import resource
import selectors
import socket
import sys
import time

BATCH = 500
BODY = b"hello world!\n"


def tree(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
                kids.setdefault(int(s[s.rfind(")") + 2:].split()[1]), []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, i = [root], 0
    while i < len(out):
        out += kids.get(out[i], [])
        i += 1
    return out


def vmrss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss(master):
    """(all processes, workers only) KiB."""
    pids = tree(master)
    workers = sum(vmrss(p) for p in pids[1:])
    return vmrss(master) + workers, workers


def request(host):
    return f"GET /small HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def open_conns(port, n, host):
    """n connections, each after one complete keep-alive exchange."""
    conns = []
    req = request(host)
    while len(conns) < n:
        batch = []
        for _ in range(min(BATCH, n - len(conns))):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(req)
            batch.append(s)
        for s in batch:
            buf = b""
            while BODY not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit(f"connection {len(conns)} closed by the proxy before its answer")
                buf += chunk
            if not buf.startswith(b"HTTP/1.1 200"):
                sys.exit(f"connection {len(conns)}: not a 200: {buf[:80]!r}")
            conns.append(s)
    return conns


def closed_by_peer(conns):
    """How many of conns the proxy has closed (EOF or reset) while they were idle."""
    closed = 0
    for s in conns:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.setblocking(True)
    return closed


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 100
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            sys.exit(f"RLIMIT_NOFILE hard limit {hard} < {want}: raise it (ulimit -Hn) or use fewer connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Exchange:
    """One keep-alive client connection: sends a request, reads one Content-Length answer."""

    def __init__(self, port, req):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.req = req
        self.buf = b""

    def send(self):
        self.buf = b""
        self.sock.sendall(self.req)

    def feed(self):
        """Reads what is there; True once a whole answer is in."""
        chunk = self.sock.recv(1 << 17)
        if not chunk:
            sys.exit("the proxy closed a keep-alive connection")
        self.buf += chunk
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = self.buf[:end].decode("latin-1").split("\r\n")
        if not head[0].startswith("HTTP/1.1 200"):
            sys.exit(f"not a 200: {head[0]!r}")
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            sys.exit("an answer without Content-Length")
        if len(self.buf) - end - 4 > length:
            sys.exit("more bytes than the answer's Content-Length")
        return len(self.buf) - end - 4 == length


def fixed_requests(port, n, c, path, host):
    req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    sent = done = 0
    t0 = time.monotonic()
    for _ in range(min(c, n)):
        ex = Exchange(port, req)
        sel.register(ex.sock, selectors.EVENT_READ, ex)
        ex.send()
        sent += 1
    while done < n:
        events = sel.select(timeout=60)
        if not events:
            sys.exit(f"no answer for 60 s after {done} of {n} requests")
        for key, _ in events:
            ex = key.data
            if ex.feed():
                done += 1
                if sent < n:
                    ex.send()
                    sent += 1
    for key in list(sel.get_map().values()):
        key.data.sock.close()
    return time.monotonic() - t0


def main(argv):
    if len(argv) >= 5 and argv[1] == "idle":
        port, master = int(argv[2]), int(argv[3])
        steps = [int(x) for x in argv[4].split(",")]
        if steps != sorted(set(steps)) or steps[0] < 1:
            sys.exit("idle: the counts must be increasing and >= 1")
        host = argv[5] if len(argv) > 5 else "bench.test"
        raise_nofile(steps[-1])
        time.sleep(1)
        lines = ["0 %d %d" % rss(master)]
        conns = []
        for n in steps:
            conns += open_conns(port, n - len(conns), host)
            # 3 s: rproxy parks connections idle for 1 s and trims its heap at its next
            # 1 s tick (see bench/README.md, "Memory").
            time.sleep(3)
            lines.append("%d %d %d" % ((n,) + rss(master)))
        closed = closed_by_peer(conns)
        for s in conns:
            s.close()
        if closed:
            sys.exit(f"the proxy closed {closed} of {len(conns)} idle connections before the last reading")
        print("\n".join(lines))
        return 0
    if len(argv) >= 6 and argv[1] == "spike":
        port, master, n, wait = int(argv[2]), int(argv[3]), int(argv[4]), float(argv[5])
        host = argv[6] if len(argv) > 6 else "bench.test"
        raise_nofile(n)
        time.sleep(1)
        start = rss(master)[1]
        conns = open_conns(port, n, host)
        half = f"GET /small HTTP/1.1\r\nHost: {host}\r\nX-Spike: {'a' * 1000}".encode()
        for s in conns:
            s.sendall(half)
        time.sleep(1)
        peak = rss(master)[1]
        for s in conns:
            s.close()
        time.sleep(wait)
        after = rss(master)[1]
        print(start, peak, after, n)
        return 0
    if len(argv) >= 6 and argv[1] == "requests":
        port, n, c, path = int(argv[2]), int(argv[3]), int(argv[4]), argv[5]
        host = argv[6] if len(argv) > 6 else "bench.test"
        secs = fixed_requests(port, n, c, path, host)
        print(n, f"{secs:.2f}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
