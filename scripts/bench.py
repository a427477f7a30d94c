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
worker_processes 1;
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
#   worker_processes 1        the CPUs the gateway gets in the pinned layout (one core)
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


def start_upstream(work, name):
    """The upstream nginx; returns the process, its HTTP/1.1 port and its h2c port."""
    port, h2c_port = free_port(), free_port()
    proc = start_nginx(work, name, UPSTREAM_CONF.format(
        work=work, name=name, port=port, h2c_port=h2c_port))
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


def print_table(title, rows):
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
    if g and direct:
        print(f"  scimgate/direct: req/s x{ratio(g.rps, direct.rps):.2f}   p99 x{ratio(g.p99, direct.p99):.2f}")
    return d


def proxy_benchmarks(args, work, binary, summary):
    cpu = cores()
    load_core, sut_core = (cpu[0], cpu[1]) if len(cpu) >= 2 and not args.no_pin else (None, None)
    cert, key = make_cert(work)
    upstream, up_port, h2c_port = start_upstream(work, "upstream")
    procs = [upstream]
    try:
        ng_port = free_port()
        nginx = start_nginx(work, "nginx", PROXY_CONF.format(
            work=work, name="nginx", port=ng_port, upstream_port=up_port, cert=cert, key=key))
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
            summary[title] = print_table(title, rows)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "scimgate"))
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="runs per figure; the median is printed")
    ap.add_argument("--soak", type=int, default=60, help="seconds of load before the last memory reading")
    ap.add_argument("--only", choices=["proxy", "memory"], action="append")
    ap.add_argument("--workload", action="append", metavar="TEXT",
                    help="run only the proxy workloads whose title contains TEXT (repeatable)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "h2load", "openssl", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run scripts/bench, which installs it")
    only = set(args.only or ["proxy", "memory"])
    summary = {}
    with tempfile.TemporaryDirectory(prefix="scimgate-bench-") as work:
        if "proxy" in only:
            proxy_benchmarks(args, work, args.binary, summary)
        if "memory" in only:
            memory_benchmarks(args, work, args.binary, summary)
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
