#!/usr/bin/env python3
"""Side-by-side benchmark: direct to the upstream, through nginx, through scimgate.

Run through scripts/bench, which installs nginx, wrk and h2load and builds the release binary.
Everything listens on loopback ports chosen here; every figure is printed, nothing is asserted.

CPU layout on a 2-core machine (printed with the results): the load generator and the upstream
share core 0 and the system under test gets core 1 to itself: the upstream alone for "direct",
the proxy alone for "nginx" and "scimgate". nginx runs one worker, scimgate a single-threaded
runtime (it sizes its runtime from the CPUs it may use), so both proxies get the same core.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The scimgate binary under test (--binary), for the scale part's helpers.
BINARY = [os.path.join(ROOT, "target", "release", "scimgate")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def cores():
    return sorted(os.sched_getaffinity(0))


def pin(pid, core):
    """Pins a process and all its threads to one core (taskset -a)."""
    if core is None:
        return
    subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)],
                   check=True, stdout=subprocess.DEVNULL)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsable latency {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


class Result:
    def __init__(self, rps, p50, p99, errors=0, note=""):
        self.rps, self.p50, self.p99, self.errors, self.note = rps, p50, p99, errors, note


def run_wrk(url, connections, duration, core, script=None, headers=()):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    if core is not None:
        cmd = ["taskset", "-c", str(core)] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return Result(rps, p50, p99, errors)


def run_h2load(url, connections, streams, duration, core, work):
    log = os.path.join(work, "h2load.log")
    if os.path.exists(log):
        os.unlink(log)
    cmd = ["h2load", f"-c{connections}", f"-m{streams}", f"-D{duration}", "-t1",
           "--log-file", log, url]
    if core is not None:
        cmd = ["taskset", "-c", str(core)] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    errors = int(m.group(2)) + int(m.group(3)) if m else 0
    durations = []
    with open(log) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                durations.append(int(parts[2]) / 1000.0)
    durations.sort()
    if not durations:
        raise RuntimeError(f"h2load logged no request:\n{out}")
    p = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))]
    return Result(rps, p(0.50), p(0.99), errors)


class Proc:
    def __init__(self, cmd, log, env=None, core=None):
        self.log = open(log, "w")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                  env=env, start_new_session=True)
        self.core = core

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
        self.log.close()


NGINX_COMMON = """
worker_processes {workers};
pid {work}/{name}.pid;
error_log {work}/{name}.error.log warn;
events {{ worker_connections 4096; }}
"""

UPSTREAM_CONF = NGINX_COMMON + """
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {work}/upstream_body;
    client_max_body_size 1m;
    client_body_buffer_size 128k;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{h2c_port} http2;
        location / {{ return 200 "hello from the upstream\\n"; }}
    }}
}}
"""

# The equivalent of scimgate's pass-through: TLS 1.2/1.3 with ALPN h2, keep-alive upstream pool,
# X-Forwarded-* headers, an access log line per request. Configured as an experienced operator
# runs it; every setting that differs from nginx's default, and why:
#   worker_processes 1        the CPUs the gateway gets in the pinned layout (one core);
#                             `auto` (one per CPU) unpinned (--no-pin), where the gateway's
#                             runtime uses every core too
#   access_log buffer/flush   a buffered log, as scimgate batches its lines (at most every 25 ms);
#                             an unbuffered nginx log costs one write(2) per request
#   keepalive_requests/timeout  long-lived client keep-alive, like scimgate's
#   upstream keepalive 256    an upstream connection pool the size of scimgate's
#   proxy_http_version 1.1 + Connection ""  needed for that pool to be used
#   ssl_protocols             the same TLS versions scimgate offers
#   ssl_session_cache/tickets off  scimgate resumes no sessions either: new-connection runs
#                             compare full handshakes on both sides
#   client_body_buffer_size   request bodies buffered in memory, not in temporary files
PROXY_CONF = NGINX_COMMON + """
http {{
    access_log {work}/nginx.access.log combined buffer=64k flush=25ms;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {work}/proxy_body;
    proxy_temp_path {work}/proxy_temp;
    client_max_body_size 1m;
    upstream platform {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        location / {{
            proxy_pass http://platform;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            # nginx's default request buffering, in memory: with `proxy_request_buffering off`
            # it dropped client connections whenever the upstream answered before reading the
            # whole body (wrk counted write errors), which would understate nginx.
            client_body_buffer_size 128k;
        }}
    }}
}}
"""

SCIMGATE_CONF = """
[[listeners]]
address = "127.0.0.1:{port}"
tls = {{ cert = "{cert}", key = "{key}" }}

[upstream]
url = "http://127.0.0.1:{upstream_port}"
pool_max_idle_per_host = 256      # as nginx's `keepalive 256`

[admin]
address = "127.0.0.1:{admin_port}"

[log]
format = "json"
level = "info"
"""

POST_LUA = """
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
"""


def make_cert(work):
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def start_nginx(work, name, conf_text):
    conf = os.path.join(work, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    for d in ("upstream_body", "proxy_body", "proxy_temp"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    proc = Proc(["nginx", "-c", conf, "-g", "daemon off;", "-e", os.path.join(work, f"{name}.error.log")],
                os.path.join(work, f"{name}.out"))
    return proc


def start_upstream(work, name, workers="1"):
    """The upstream nginx; returns the process, its HTTP/1.1 port and its h2c port."""
    port, h2c_port = free_port(), free_port()
    proc = start_nginx(work, name, UPSTREAM_CONF.format(
        workers=workers, work=work, name=name, port=port, h2c_port=h2c_port))
    wait_port(port)
    return proc, port, h2c_port


def start_scimgate(work, name, binary, cert, key, upstream_port, core=None):
    """scimgate in front of the upstream; returns the process and its TLS port."""
    port, admin_port = free_port(), free_port()
    conf = os.path.join(work, f"{name}.toml")
    with open(conf, "w") as f:
        f.write(SCIMGATE_CONF.format(port=port, cert=cert, key=key, upstream_port=upstream_port,
                                     admin_port=admin_port))
    cmd = [binary, "serve", "--config", conf]
    if core is not None:
        # Started on its core so its runtime is single-threaded, like nginx's one worker process.
        cmd = ["taskset", "-c", str(core)] + cmd
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIMGATE_") and k != "RUST_LOG"}
    proc = Proc(cmd, os.path.join(work, f"{name}.log"), env=env)
    wait_port(port)
    return proc, port


def nginx_pids(proc):
    """The master and its worker processes."""
    out = subprocess.run(["pgrep", "-P", str(proc.p.pid)], capture_output=True, text=True).stdout
    return [proc.p.pid] + [int(x) for x in out.split()]


def pin_all(pids, core):
    for pid in pids:
        pin(pid, core)


def median_result(results):
    return Result(statistics.median(r.rps for r in results),
                  statistics.median(r.p50 for r in results),
                  statistics.median(r.p99 for r in results),
                  sum(r.errors for r in results))


def ratio(a, b):
    return a / b if b else float("nan")


def print_table(title, rows, runs=None):
    print(f"\n{title}")
    print(f"  {'path':<10} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}  (errors: all rounds)")
    for name, r in rows:
        if r is None:
            print(f"  {name:<10} {'n/a':>10}")
            continue
        print(f"  {name:<10} {r.rps:>10.0f} {r.p50:>9.2f} {r.p99:>9.2f} {r.errors:>7}")
    d = dict(rows)
    g, n, direct = d.get("scimgate"), d.get("nginx"), d.get("direct")
    if g and n:
        print(f"  scimgate/nginx:  req/s x{ratio(g.rps, n.rps):.2f}   p99 x{ratio(g.p99, n.p99):.2f}")
        if runs and len(runs.get("scimgate", ())) > 1:
            # The spread: each round's ratio, scimgate against the nginx run of the same round.
            per_round = [(ratio(a.rps, b.rps), ratio(a.p99, b.p99))
                         for a, b in zip(runs["scimgate"], runs["nginx"])]
            rps_r, p99_r = [x for x, _ in per_round], [y for _, y in per_round]
            print(f"  scimgate/nginx per round: req/s x{min(rps_r):.2f}-{max(rps_r):.2f}   "
                  f"p99 x{min(p99_r):.2f}-{max(p99_r):.2f}")
    if g and direct:
        print(f"  scimgate/direct: req/s x{ratio(g.rps, direct.rps):.2f}   p99 x{ratio(g.p99, direct.p99):.2f}")
    return d


def proxy_benchmarks(args, work, binary, summary):
    cpu = cores()
    load_core, sut_core = (cpu[0], cpu[1]) if len(cpu) >= 2 and not args.no_pin else (None, None)
    cert, key = make_cert(work)
    upstream, up_port, h2c_port = start_upstream(
        work, "upstream", "1" if sut_core is not None else "auto")
    procs = [upstream]
    try:
        ng_port = free_port()
        nginx = start_nginx(work, "nginx", PROXY_CONF.format(
            workers="1" if sut_core is not None else "auto", work=work, name="nginx", port=ng_port, upstream_port=up_port, cert=cert, key=key))
        procs.append(nginx)
        wait_port(ng_port)
        gateway, gw_port = start_scimgate(work, "scimgate", binary, cert, key, up_port, sut_core)
        procs.append(gateway)
        pin_all(nginx_pids(upstream), load_core)
        pin_all(nginx_pids(nginx), sut_core)
        if load_core is not None:
            print(f"CPU layout: load generator and upstream on core {load_core}; the system under "
                  f"test (upstream alone for direct, else the proxy) on core {sut_core}")
        else:
            print("CPU layout: not pinned (fewer than 2 cores, or --no-pin)")
        print(f"connections {args.connections}, {args.duration}s per run, median of {args.rounds} "
              f"rounds, "
              f"nginx {nginx_version()}, wrk and h2load from the system packages")
        post_lua = os.path.join(work, "post.lua")
        with open(post_lua, "w") as f:
            f.write(POST_LUA)

        targets = {
            "direct": f"http://127.0.0.1:{up_port}",
            "nginx": f"https://127.0.0.1:{ng_port}",
            "scimgate": f"https://127.0.0.1:{gw_port}",
        }

        c, d = args.connections, args.duration
        workloads = {
            "small GET, HTTP/1.1 keep-alive": lambda base, dur: run_wrk(
                f"{base}/hello", c, dur, load_core),
            "64 KiB POST, HTTP/1.1 keep-alive": lambda base, dur: run_wrk(
                f"{base}/upload", c, dur, load_core, script=post_lua),
            "small GET, HTTP/2 (10 streams per connection)": lambda base, dur: run_h2load(
                (base.replace(str(up_port), str(h2c_port)) if base.startswith("http:") else base)
                + "/hello", c, 10, dur, load_core, work),
            "new connection per request (TLS handshake; direct: plain TCP)": lambda base, dur: run_wrk(
                f"{base}/hello", min(c, 16), dur, load_core, headers=["Connection: close"]),
        }
        names = list(targets)
        if args.workload:
            workloads = {t: w for t, w in workloads.items()
                         if any(pick.lower() in t.lower() for pick in args.workload)}
        for title, run in workloads.items():
            runs = {name: [] for name in names}
            for r in range(args.rounds):
                # Each round starts with another target, so drift in the machine's speed does
                # not always favour the same one; the median of the rounds is reported.
                for name in names[r % len(names):] + names[:r % len(names)]:
                    # Direct: the upstream gets the core the proxies get.
                    pin_all(nginx_pids(upstream), sut_core if name == "direct" else load_core)
                    if r == 0:
                        run(targets[name], 2)  # warm-up: pools, caches, allocator
                    runs[name].append(run(targets[name], d))
            pin_all(nginx_pids(upstream), load_core)
            rows = [(name, median_result(runs[name])) for name in names]
            summary[title] = print_table(title, rows, runs)
        gw_pid = gateway.p.pid
        summary["scimgate RSS after the runs (MiB)"] = rss_kib(gw_pid) / 1024
        print(f"\nscimgate resident memory after these runs: {rss_kib(gw_pid) / 1024:.1f} MiB")
    finally:
        for p in procs:
            p.stop()


def nginx_version():
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    return out.strip().split("/")[-1]


def open_idle_connections(port, n, ctx):
    """n TLS connections, each having made one keep-alive request, left open."""
    conns = []
    for _ in range(n):
        raw = socket.create_connection(("127.0.0.1", port))
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf or not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
            if b"hello from the upstream\n" in buf:
                break
        conns.append(s)
    return conns


def memory_benchmarks(args, work, binary, summary):
    cert, key = make_cert(work)
    upstream, up_port, _ = start_upstream(work, "mem-upstream")
    conns = []
    gateway = None
    try:
        gateway, gw_port = start_scimgate(work, "mem-scimgate", binary, cert, key, up_port)
        time.sleep(1.0)
        pid = gateway.p.pid
        idle = rss_kib(pid)
        print(f"\nMemory (scimgate resident set, default runtime on {len(cores())} cores)")
        print(f"  idle after start:                         {idle / 1024:7.1f} MiB")
        summary["RSS idle (MiB)"] = idle / 1024
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        points = []
        for target in (250, 500, 750, 1000):
            conns += open_idle_connections(gw_port, target - len(conns), ctx)
            time.sleep(0.5)
            points.append((len(conns), rss_kib(pid)))
            print(f"  with {len(conns):4d} idle keep-alive TLS connections: {points[-1][1] / 1024:7.1f} MiB")
        summary["RSS with 1000 idle connections (MiB)"] = points[-1][1] / 1024
        xs = [0] + [p[0] for p in points]
        ys = [idle] + [p[1] for p in points]
        slope = statistics.linear_regression(xs, ys).slope
        print(f"  growth per open connection:               {slope:7.1f} KiB")
        summary["KiB per idle connection"] = slope
        for s in conns:
            s.close()
        conns = []
        run_wrk(f"https://127.0.0.1:{gw_port}/hello", args.connections, args.soak, None)
        time.sleep(1.0)
        after = rss_kib(pid)
        print(f"  after {args.soak}s of load ({args.connections} connections, closed): "
              f"{after / 1024:7.1f} MiB")
        summary[f"RSS after {args.soak}s of load (MiB)"] = after / 1024
    finally:
        for s in conns:
            s.close()
        if gateway is not None:
            gateway.stop()
        upstream.stop()


# ---------------------------------------------------------------------------------------------
# scale (issue 18): a large directory's initial sync through the gateway against a development
# platform that answers every native call 10 ms late, a paged listing of 50,000 users, and the
# development platform alone at that size. Processes are not pinned: the sync is bound by the
# emulated latency, not by a core.

SCIM_V2 = "/Thingworx/SCIMProvider/SCIM/v2"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
# The gateway's platform.max_concurrency in the sync: set explicitly to the default (8), the
# same as the identity provider's 8 connections. The latency floor divides by it.
SCALE_MAX_CONCURRENCY = 8
SCALE_LATENCY_MS = 10
# The development platform's PBKDF2 cost for the passwords the gateway gives new users (default
# 100,000). A real platform hashes on its own cores; here it would share the gateway's two and
# the load generator's, and the sync would measure the hashing instead of the gateway against
# the latency. 1,000 is the least `scimgate dev` accepts.
SCALE_PASSWORD_ITERATIONS = 1000
# Entra ID adds group members in PATCHes of this many.
MEMBERS_PER_PATCH = 100

SCALE_GATEWAY_CONF = """
[[listeners]]
address = "127.0.0.1:{port}"
tls = {{ self_signed = true, self_signed_dir = "{work}/scale-tls" }}

[upstream]
url = "http://127.0.0.1:{platform_port}"

[admin]
address = "127.0.0.1:{admin_port}"

[log]
format = "json"
level = "warn"

[platform]
app_key = "file:{data}/gateway.appkey"
max_concurrency = {max_concurrency}

[scim]
bearer_token = "file:{data}/scim.token"

[provisioning]
audit_log = "{work}/scale-audit.jsonl"
password_min_length = 14
"""


def start_dev(work, name, data, extra=()):
    """`scimgate dev` on `data`; returns the process and its listeners' ports (json logs)."""
    ports = {"gateway": free_port(), "platform": free_port(), "admin": free_port()}
    cmd = [BINARY[0], "dev", "--data-dir", data,
           "--listen", f"127.0.0.1:{ports['gateway']}",
           "--platform-listen", f"127.0.0.1:{ports['platform']}",
           "--admin-listen", f"127.0.0.1:{ports['admin']}",
           "--log-format", "json", "--log-level", "warn", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIMGATE_") and k != "RUST_LOG"}
    proc = Proc(cmd, os.path.join(work, f"{name}.log"), env=env)
    return proc, ports


def wait_http(url, timeout=60.0, ctx=None):
    """Polls until `url` answers 200; returns the seconds waited."""
    import urllib.request
    started = time.time()
    while time.time() - started < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1.0, context=ctx) as r:
                if r.status == 200:
                    return time.time() - started
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


def stop_dev(proc):
    """SIGTERM: a clean stop compacts the journal into state.json."""
    proc.stop()


def platform_calls(admin_port):
    """The gateway's scimgate_platform_calls_total, summed over results."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(m.group(1)) for m in
               re.finditer(r"^scimgate_platform_calls_total\{[^}]*\} (\S+)$", text, re.M))


class RssSampler:
    """Samples VmRSS of some processes every 0.5 s in a thread; keeps the maximum of each."""

    def __init__(self, pids):
        import threading
        self.pids, self.peak = pids, {p: 0 for p in pids}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            for p in self.pids:
                try:
                    self.peak[p] = max(self.peak[p], rss_kib(p))
                except (OSError, RuntimeError):
                    pass
            self.done.wait(0.5)

    def stop(self):
        self.done.set()
        self.thread.join()
        return {p: kib / 1024 for p, kib in self.peak.items()}


class Scim:
    """One identity-provider connection: HTTPS keep-alive, SCIM 2.0, a bearer token."""

    def __init__(self, port, token):
        import http.client
        self.port, self.token = port, token
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.http = http.client
        self.conn = None

    def call(self, method, path, body=None, expect=(200, 201, 204)):
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/scim+json"}
        if payload is not None:
            headers["Content-Type"] = "application/scim+json"
        for attempt in range(2):
            if self.conn is None:
                self.conn = self.http.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                                      timeout=120)
            try:
                self.conn.request(method, SCIM_V2 + path, body=payload, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
            except (OSError, self.http.HTTPException):
                # A keep-alive connection the server closed: reconnect once, as an IdP does.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            if r.status not in expect:
                raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
            return json.loads(data) if data else None

    def close(self):
        if self.conn is not None:
            self.conn.close()


def run_parallel(tasks, connections, port, token):
    """Runs each task (a function of a Scim connection) on one of `connections` workers, in
    order of the list; raises the first failure."""
    import queue
    import threading
    todo = queue.Queue()
    for t in tasks:
        todo.put(t)
    errors = []

    def worker():
        scim = Scim(port, token)
        try:
            while not errors:
                try:
                    task = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    task(scim)
                except Exception as e:  # noqa: BLE001 - reported below, the run stops
                    errors.append(e)
        finally:
            scim.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def sync_plan(users, groups, patches, seed=18):
    """Group sizes (five of 2,000, the rest making an average of 50 members), their members
    (indexes into the users) and the single-member PATCHes (add a non-member or remove a
    member), deterministic for a seed."""
    import random
    rnd = random.Random(seed)
    big = min(5, groups)
    total = 50 * groups
    sizes = [min(2000, users)] * big
    rest = groups - big
    if rest:
        left = max(0, total - sum(sizes))
        sizes += [left // rest + (1 if i < left % rest else 0) for i in range(rest)]
    members = [rnd.sample(range(users), min(size, users)) for size in sizes]
    current = [set(m) for m in members]
    changes = []
    for i in range(patches):
        g = rnd.randrange(groups)
        if (i % 2 or len(current[g]) >= users) and current[g]:
            u = rnd.choice(sorted(current[g]))
            current[g].discard(u)
            changes.append((g, "remove", u))
        else:
            u = rnd.randrange(users)
            while u in current[g]:
                u = rnd.randrange(users)
            current[g].add(u)
            changes.append((g, "add", u))
    return sizes, members, changes


def emulated_call_ms(platform_port, data, calls=200):
    """Mean and median milliseconds of sequential `GetEntityList` calls straight to the
    development platform: what one native call takes under the emulated latency, against which
    the floor counts 10 ms."""
    import http.client
    with open(os.path.join(data, "gateway.appkey")) as f:
        key = f.read().strip()
    conn = http.client.HTTPConnection("127.0.0.1", platform_port, timeout=10)
    body = json.dumps({"type": "User", "maxItems": 10})
    headers = {"appKey": key, "Content-Type": "application/json", "Accept": "application/json"}
    took = []
    try:
        for _ in range(calls):
            t0 = time.perf_counter()
            conn.request("POST", "/Thingworx/Resources/EntityServices/Services/GetEntityList",
                         body, headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"GetEntityList answered {answer.status}")
            took.append((time.perf_counter() - t0) * 1000)
    finally:
        conn.close()
    return statistics.mean(took), statistics.median(took)


def initial_sync(work, args, round_no):
    """One initial sync as Entra ID / PingFederate make it; returns the figures."""
    data = os.path.join(work, f"sync-{round_no}")
    dev, dev_ports = start_dev(work, f"sync-dev-{round_no}", data,
                               ["--platform-latency", f"{SCALE_LATENCY_MS}ms",
                                "--password-hash-iterations", str(SCALE_PASSWORD_ITERATIONS)])
    gateway = None
    try:
        wait_http(f"http://127.0.0.1:{dev_ports['admin']}/readyz")
        call_mean, call_median = emulated_call_ms(dev_ports["platform"], data)
        port, admin_port = free_port(), free_port()
        conf = os.path.join(work, f"sync-gateway-{round_no}.toml")
        with open(conf, "w") as f:
            f.write(SCALE_GATEWAY_CONF.format(port=port, work=work, platform_port=dev_ports["platform"],
                                              admin_port=admin_port, data=data,
                                              max_concurrency=SCALE_MAX_CONCURRENCY))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCIMGATE_") and k != "RUST_LOG"}
        gateway = Proc([BINARY[0], "serve", "--config", conf],
                       os.path.join(work, f"sync-gateway-{round_no}.log"), env=env)
        wait_http(f"http://127.0.0.1:{admin_port}/readyz")
        with open(os.path.join(data, "scim.token")) as f:
            token = f.read().strip()

        n_users, n_groups, n_patches = args.scale_users, args.scale_groups, args.scale_patches
        sizes, members, changes = sync_plan(n_users, n_groups, n_patches)
        names = [f"sync.user{i:05d}@example.com" for i in range(n_users)]
        ids = [None] * n_users
        group_ids = [None] * n_groups

        def user_task(i):
            def run(scim):
                name = names[i]
                found = scim.call("GET", "/Users?filter=" + urllib_quote(f'userName eq "{name}"'))
                if found.get("totalResults"):
                    ids[i] = found["Resources"][0]["id"]
                    return
                created = scim.call("POST", "/Users", {
                    "schemas": [USER_SCHEMA], "userName": name, "externalId": f"ext-{i:05d}",
                    "active": True, "displayName": f"Sync User {i}",
                    "name": {"givenName": "Sync", "familyName": f"User{i}"},
                    "emails": [{"value": name, "type": "work", "primary": True}],
                })
                ids[i] = created["id"]
            return run

        def group_task(g):
            def run(scim):
                created = scim.call("POST", "/Groups", {
                    "schemas": [GROUP_SCHEMA], "displayName": f"sync-group-{g:04d}",
                    "externalId": f"gext-{g:04d}"})
                group_ids[g] = created["id"]
                m = members[g]
                for k in range(0, len(m), MEMBERS_PER_PATCH):
                    chunk = m[k:k + MEMBERS_PER_PATCH]
                    scim.call("PATCH", f"/Groups/{group_ids[g]}", {
                        "schemas": [PATCH_SCHEMA],
                        "Operations": [{"op": "add", "path": "members",
                                        "value": [{"value": ids[u]} for u in chunk]}]})
            return run

        def change_task(g, op, u):
            def run(scim):
                if op == "add":
                    operation = {"op": "add", "path": "members", "value": [{"value": ids[u]}]}
                else:
                    operation = {"op": "remove", "path": f'members[value eq "{ids[u]}"]'}
                scim.call("PATCH", f"/Groups/{group_ids[g]}",
                          {"schemas": [PATCH_SCHEMA], "Operations": [operation]})
            return run

        # The largest groups first, so no connection is left with a long tail at the end.
        order = sorted(range(n_groups), key=lambda g: -sizes[g])
        phases = [
            ("users", [user_task(i) for i in range(n_users)]),
            ("groups", [group_task(g) for g in order]),
            ("member PATCHes", [change_task(*c) for c in changes]),
        ]
        sampler = RssSampler([gateway.p.pid, dev.p.pid])
        calls_before = platform_calls(admin_port)
        cpu_before = {p: cpu_seconds(p) for p in (gateway.p.pid, dev.p.pid)}
        started = time.time()
        figures = {}
        for phase, tasks in phases:
            t0, c0 = time.time(), platform_calls(admin_port)
            run_parallel(tasks, args.scale_connections, port, token)
            took, calls = time.time() - t0, platform_calls(admin_port) - c0
            figures[f"{phase} s"] = took
            figures[f"{phase} wall/floor"] = ratio(
                took, calls * SCALE_LATENCY_MS / 1000.0 / SCALE_MAX_CONCURRENCY)
        wall = time.time() - started
        calls = platform_calls(admin_port) - calls_before
        peaks = sampler.stop()
        floor = calls * SCALE_LATENCY_MS / 1000.0 / SCALE_MAX_CONCURRENCY
        return {
            f"native call at {SCALE_LATENCY_MS} ms latency, mean ms": call_mean,
            f"native call at {SCALE_LATENCY_MS} ms latency, median ms": call_median,
            "wall s": wall,
            **figures,
            "native calls": calls,
            "latency floor s": floor,
            "wall/floor": ratio(wall, floor),
            "gateway CPU s": cpu_seconds(gateway.p.pid) - cpu_before[gateway.p.pid],
            "dev platform CPU s": cpu_seconds(dev.p.pid) - cpu_before[dev.p.pid],
            "gateway RSS max MiB": peaks[gateway.p.pid],
            "dev process RSS max MiB": peaks[dev.p.pid],
        }
    finally:
        if gateway is not None:
            gateway.stop()
        stop_dev(dev)
        shutil.rmtree(data, ignore_errors=True)


def cpu_seconds(pid):
    """User plus system CPU time of a process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def urllib_quote(text):
    import urllib.parse
    return urllib.parse.quote(text, safe="")


def write_private(path, data):
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def seed_platform(work, name, users, groups, seed=18):
    """A development platform data directory holding `users` users and `groups` groups (50
    members each on average), written in the shape it loads (state.json after a clean stop)
    instead of being created through the API: a fresh `scimgate dev` initialises it (keys,
    certificate, built-ins) and stops, then the snapshot gets the users and groups."""
    import random
    data = os.path.join(work, name)
    dev, ports = start_dev(work, f"{name}-init", data)
    try:
        wait_http(f"http://127.0.0.1:{ports['admin']}/readyz")
    finally:
        stop_dev(dev)
    path = os.path.join(data, "state.json")
    with open(path) as f:
        state = json.load(f)
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    names = [f"seed.user{i:05d}@example.com" for i in range(users)]
    # Shaped as a user created through SCIM 2.0 is (extension values, an externalId tag).
    state["users"] += [{
        "name": n, "description": "", "enabled": True, "password": None, "projectName": "",
        "homeMashup": "", "mobileMashup": "", "language": "",
        "tags": [{"vocabulary": "SCIMExternalId", "vocabularyTerm": f"seed-{i:05d}"}],
        "extensions": {"emailAddress": n, "firstName": "Seed", "fullName": f"Seed User {i}",
                       "lastName": f"User{i}"},
        "lastModifiedDate": now} for i, n in enumerate(names)]
    state["groups"] += [{
        "name": f"seed-group-{g:04d}", "description": "", "projectName": "", "homeMashup": "",
        "tags": [{"vocabulary": "SCIMExternalId", "vocabularyTerm": f"seed-g-{g:04d}"}],
        "members": [{"name": names[u], "type": "User"}
                    for u in rnd.sample(range(users), min(users, rnd.randint(1, 99)))],
        "lastModifiedDate": now} for g in range(groups)]
    for v in state["vocabularies"]:
        if v["name"] == "SCIMExternalId":
            v["terms"] += [f"seed-{i:05d}" for i in range(users)]
            v["terms"] += [f"seed-g-{g:04d}" for g in range(groups)]
    write_private(path, json.dumps(state).encode())
    return data


def paged_listing(work, data, round_no, page_size=100, edge=10):
    """GET /Users page by page through `scimgate dev`'s gateway; seconds per page."""
    copy = os.path.join(work, f"list-{round_no}")
    shutil.copytree(data, copy)
    dev, ports = start_dev(work, f"list-dev-{round_no}", copy)
    try:
        wait_http(f"http://127.0.0.1:{ports['admin']}/readyz")
        with open(os.path.join(copy, "scim.token")) as f:
            scim = Scim(ports["gateway"], f.read().strip())
        sampler = RssSampler([dev.p.pid])
        first = scim.call("GET", f"/Users?startIndex=1&count={page_size}")
        total = first["totalResults"]
        per_page = []
        started = time.time()
        for start in range(1, total + 1, page_size):
            t0 = time.time()
            page = scim.call("GET", f"/Users?startIndex={start}&count={page_size}")
            per_page.append(time.time() - t0)
            if len(page.get("Resources", [])) != min(page_size, total - start + 1):
                raise RuntimeError(f"page at {start}: {len(page.get('Resources', []))} users")
        wall = time.time() - started
        scim.close()
        peak = sampler.stop()[dev.p.pid]
        head = statistics.median(per_page[:edge]) * 1000
        tail = statistics.median(per_page[-edge:]) * 1000
        return {"users listed": total, "pages": len(per_page), "listing s": wall,
                f"first {edge} pages ms/page": head, f"last {edge} pages ms/page": tail,
                "last/first": ratio(tail, head), "dev process RSS max MiB (listing)": peak}
    finally:
        stop_dev(dev)
        shutil.rmtree(copy, ignore_errors=True)


CREATE_LUA = """
counter = 0
request = function()
    counter = counter + 1
    local body = '{"name":"bench.create-' .. tostring(os.time()) .. '-' .. counter .. '","description":"bench"}'
    return wrk.format("POST", "/Thingworx/Resources/EntityServices/Services/CreateUser", nil, body)
end
"""


def platform_creates(work, data, label, seconds, connections=4):
    """CreateUser straight to the development platform (no password, so no hashing is timed;
    each create journalled and fsynced before its answer): creates/s from wrk."""
    copy = os.path.join(work, f"creates-{label}")
    shutil.copytree(data, copy)
    dev, ports = start_dev(work, f"creates-dev-{label}", copy)
    try:
        wait_http(f"http://127.0.0.1:{ports['admin']}/readyz")
        with open(os.path.join(copy, "gateway.appkey")) as f:
            key = f.read().strip()
        script = os.path.join(work, "create.lua")
        with open(script, "w") as f:
            f.write(CREATE_LUA)
        r = run_wrk(f"http://127.0.0.1:{ports['platform']}", connections, seconds, None,
                    script=script, headers=[f"appKey: {key}", "Content-Type: application/json",
                                            "Accept: application/json"])
        return r, rss_kib(dev.p.pid) / 1024
    finally:
        stop_dev(dev)
        shutil.rmtree(copy, ignore_errors=True)


def restart_time(work, data, round_no):
    """Seconds from starting `scimgate dev` on `data` until its platform, gateway and admin
    listeners answer; and its resident set then."""
    copy = os.path.join(work, f"restart-{round_no}")
    shutil.copytree(data, copy)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    started = time.time()
    dev, ports = start_dev(work, f"restart-dev-{round_no}", copy)
    try:
        wait_http(f"http://127.0.0.1:{ports['platform']}/Thingworx")
        wait_http(f"http://127.0.0.1:{ports['admin']}/readyz")
        wait_tls(ports["gateway"], ctx)
        took = time.time() - started
        time.sleep(1.0)
        return took, rss_kib(dev.p.pid) / 1024
    finally:
        stop_dev(dev)
        shutil.rmtree(copy, ignore_errors=True)


def wait_tls(port, ctx, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost"):
                    return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"no TLS handshake on port {port} after {timeout}s")


def spread(values, fmt):
    """median (min–max)"""
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def print_rounds(title, rows, rounds):
    print(f"\n{title}")
    print(f"  {'':<44} {'median (min–max) of ' + str(rounds) + ' rounds':>36}")
    for label, values, fmt in rows:
        print(f"  {label:<44} {spread(values, fmt):>36}")


def scale_benchmarks(args, work, summary):
    rounds = args.rounds
    print(f"\nScale (issue 18): {len(cores())} cores, processes not pinned; {rounds} rounds; "
          f"binary {BINARY[0]}")
    print(f"  sync: {args.scale_users} users (GET filter userName eq, then POST), "
          f"{args.scale_groups} groups (5 of 2,000 members, average 50; POST, then PATCH add of "
          f"{MEMBERS_PER_PATCH} members each, as Entra ID does), then {args.scale_patches} "
          f"single-member PATCHes (add, remove alternately); {args.scale_connections} HTTPS "
          f"keep-alive connections, SCIM 2.0, bearer token")
    print(f"  gateway: a `scimgate serve` of its own (platform.max_concurrency = "
          f"{SCALE_MAX_CONCURRENCY}, the default, as many as the IdP's connections) in front "
          f"of `scimgate dev --platform-latency {SCALE_LATENCY_MS}ms --password-hash-iterations "
          f"{SCALE_PASSWORD_ITERATIONS}` (a call answered no sooner than {SCALE_LATENCY_MS} ms "
          f"after it arrives); floor = native calls x "
          f"{SCALE_LATENCY_MS} ms / {SCALE_MAX_CONCURRENCY}")
    parts = set(args.scale_part or ["platform", "sync", "listing"])
    big = None
    if parts & {"platform", "listing"}:
        big = seed_platform(work, "seed-big", args.scale_list_users, 1000)
    if "platform" in parts:
        scale_platform_alone(args, work, summary, big)
    if "sync" in parts:
        scale_sync(args, work, summary)
    if "listing" in parts:
        scale_listing(args, work, summary, big)


def scale_platform_alone(args, work, summary, big):
    rounds = args.rounds
    small = seed_platform(work, "seed-small", 1000, 20)
    creates_small, creates_big, restarts, rss_restart, rss_creates = [], [], [], [], []
    for r in range(rounds):
        # Alternating which size goes first, so drift in the machine's speed favours neither.
        order = [("small", small), ("big", big)] if r % 2 == 0 else [("big", big), ("small", small)]
        for label, data in order:
            result, rss = platform_creates(work, data, f"{label}-{r}", args.scale_create_seconds)
            if result.errors:
                raise RuntimeError(f"{result.errors} creates failed at {label}")
            if label == "small":
                creates_small.append(result.rps)
            else:
                creates_big.append(result.rps)
                rss_creates.append(rss)
        took, rss = restart_time(work, big, r)
        restarts.append(took)
        rss_restart.append(rss)
    print_rounds(f"Development platform alone (CreateUser from 4 connections for "
                 f"{args.scale_create_seconds}s, no emulated latency)",
                 [("creates/s at 1,000 users", creates_small, "{:.0f}"),
                  (f"creates/s at {args.scale_list_users} users", creates_big, "{:.0f}"),
                  ("ratio large/small (target >= 0.8)",
                   [b / s for b, s in zip(creates_big, creates_small)], "{:.2f}"),
                  (f"restart s, {args.scale_list_users} users + 1,000 groups (target < 2)",
                   restarts, "{:.2f}"),
                  ("dev process RSS after restart MiB (target <= 64)", rss_restart, "{:.1f}"),
                  ("dev process RSS after the creates MiB", rss_creates, "{:.1f}")], rounds)
    summary["scale platform"] = {"creates/s small": creates_small, "creates/s big": creates_big,
                                 "restart s": restarts, "RSS after restart MiB": rss_restart,
                                 "RSS after creates MiB": rss_creates}


def scale_sync(args, work, summary):
    rounds = args.rounds
    sync = []
    for r in range(rounds):
        sync.append(initial_sync(work, args, r))
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in sync[-1].items()),
              flush=True)
    keys = list(sync[0])
    print_rounds("Initial sync (target wall/floor <= 1.2x; gateway RSS <= 40 MiB)",
                 [(k, [s[k] for s in sync], "{:.0f}" if k == "native calls" else "{:.2f}")
                  for k in keys], rounds)
    summary["scale sync"] = sync



def scale_listing(args, work, summary, big):
    rounds = args.rounds
    listing = []
    for r in range(rounds):
        listing.append(paged_listing(work, big, r))
        print(f"  listing round {r + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in listing[-1].items()),
              flush=True)
    print_rounds(f"Paged listing of {args.scale_list_users} users through `scimgate dev`'s gateway "
                 f"(no emulated latency; 100 per page, one connection; target last/first <= 1.2x)",
                 [(k, [s[k] for s in listing], "{:.2f}") for k in listing[0]], rounds)
    summary["scale listing"] = listing



def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "scimgate"))
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="runs per figure; the median is printed")
    ap.add_argument("--soak", type=int, default=60, help="seconds of load before the last memory reading")
    ap.add_argument("--only", choices=["proxy", "memory", "scale"], action="append",
                    help="parts to run (default proxy and memory; scale only when asked)")
    ap.add_argument("--workload", action="append", metavar="TEXT",
                    help="run only the proxy workloads whose title contains TEXT (repeatable)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--scale-users", type=int, default=10000, help="scale: users in the sync")
    ap.add_argument("--scale-groups", type=int, default=500, help="scale: groups in the sync")
    ap.add_argument("--scale-patches", type=int, default=1000,
                    help="scale: single-member PATCHes after the sync")
    ap.add_argument("--scale-connections", type=int, default=8,
                    help="scale: identity-provider connections")
    ap.add_argument("--scale-list-users", type=int, default=50000,
                    help="scale: users in the paged listing and the platform-alone figures")
    ap.add_argument("--scale-create-seconds", type=int, default=5,
                    help="scale: seconds of creates at each size")
    ap.add_argument("--scale-part", choices=["platform", "sync", "listing"], action="append",
                    help="scale: run only this part (repeatable; default all three)")
    args = ap.parse_args()
    only = set(args.only or ["proxy", "memory"])
    needed = ("nginx", "wrk", "h2load", "openssl", "taskset") if only - {"scale"} else ("wrk",)
    for tool in needed:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run scripts/bench, which installs it")
    BINARY[0] = args.binary
    summary = {}
    with tempfile.TemporaryDirectory(prefix="scimgate-bench-") as work:
        if "proxy" in only:
            proxy_benchmarks(args, work, args.binary, summary)
        if "memory" in only:
            memory_benchmarks(args, work, args.binary, summary)
        if "scale" in only:
            scale_benchmarks(args, work, summary)
    if args.json:
        def plain(v):
            if isinstance(v, Result):
                return vars(v)
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v
        with open(args.json, "w") as f:
            json.dump(plain(summary), f, indent=2)


if __name__ == "__main__":
    main()
