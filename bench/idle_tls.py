#!/usr/bin/env python3
"""RSS per idle TLS keep-alive connection: open N TLS connections to 127.0.0.1:PORT, make one
keep-alive GET /small on each, leave them idle, and print the proxy's RSS (KiB, the master PID
and all its descendants) before and with them: `before after n`."""
import os, resource, socket, ssl, sys, time

def tree(pid):
    out, kids = [pid], {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                s = open(f"/proc/{d}/stat").read()
                kids.setdefault(int(s[s.rfind(")") + 2:].split()[1]), []).append(int(d))
            except OSError:
                pass
    i = 0
    while i < len(out):
        out += kids.get(out[i], [])
        i += 1
    return out

def rss(pid):
    total = 0
    for p in tree(pid):
        try:
            for l in open(f"/proc/{p}/status"):
                if l.startswith("VmRSS:"):
                    total += int(l.split()[1])
        except OSError:
            pass
    return total

port, master, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 100)), hard))
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
time.sleep(1)
before = rss(master)
conns = []
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="bench.test")
    s.sendall(b"GET /small HTTP/1.1\r\nHost: bench.test\r\n\r\n")
    buf = b""
    while b"hello world!\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("connection closed before the answer")
        buf += chunk
    conns.append(s)
time.sleep(2)
after = rss(master)
print(before, after, len(conns))
for s in conns:
    s.close()
