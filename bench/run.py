#!/usr/bin/env python3
"""Benchmarks `rwsgi serve` against gunicorn, uWSGI, Granian, bjoern and waitress on the same apps, one
process each, measured with wrk for several rounds that alternate between the servers. Prints a Markdown
table per workload: median requests/s, median p99 latency, peak RSS and each peer's ratio to rwsgi. Run
through bench/run, which sets up the venv."""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
VENV = os.path.join(BENCH, '.venv')
BIN = os.path.join(VENV, 'bin')
RWSGI = os.path.join(REPO, 'target', 'release', 'rwsgi')

# name -> (path, app module:callable, wrk extra args, connections, threads per threaded server)
WORKLOADS = {
    'hello': ('/', 'apps:application', [], 32, 8),
    '10k': ('/10k', 'apps:application', [], 32, 8),
    'echo100k': ('/echo', 'apps:application', ['-s', os.path.join(BENCH, 'post100k.lua')], 32, 8),
    'django': ('/page/', 'django_app:application', [], 32, 16),
}


def server_command(server, app, port, threads):
    module, _ = app.split(':')
    host = '127.0.0.1'
    if server == 'rwsgi':
        return [RWSGI, 'serve', app, '--host', host, '--port', str(port), '--threads', str(threads),
                '--python-path', BENCH, '--python-home', VENV]
    if server == 'gunicorn':
        # The sync worker is gunicorn's fastest for fast apps; gthread when threads matter (Django).
        worker = ['-k', 'gthread', '--threads', str(threads)] if threads > 8 else ['-k', 'sync']
        return [os.path.join(BIN, 'gunicorn'), '-w', '1', *worker, '-b', '%s:%d' % (host, port), app]
    if server == 'uwsgi':
        return [os.path.join(BIN, 'uwsgi'), '--http-socket', '%s:%d' % (host, port), '--module', app,
                '--processes', '1', '--threads', str(threads), '--disable-logging', '--die-on-term',
                '--pythonpath', BENCH, '--listen', '1024']
    if server == 'granian':
        return [os.path.join(BIN, 'granian'), '--interface', 'wsgi', '--workers', '1', '--blocking-threads',
                str(threads), '--host', host, '--port', str(port), '--backlog', '1024', app]
    if server == 'bjoern':
        return [os.path.join(BIN, 'python'), os.path.join(BENCH, 'bjoern_serve.py'), app, host, str(port)]
    if server == 'waitress':
        return [os.path.join(BIN, 'waitress-serve'), '--threads', str(threads), '--host', host,
                '--port', str(port), '--backlog', '1024', app]
    raise ValueError(server)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_ready(port, path, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError('server exited with %s' % proc.returncode)
        try:
            with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=5) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError('server not ready on port %d' % port)


def tree_peak_rss_kib(pid):
    """VmHWM of the process and its descendants, summed."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            with open('/proc/%d/status' % p) as f:
                m = re.search(r'VmHWM:\s+(\d+)', f.read())
                total += int(m.group(1)) if m else 0
            with open('/proc/%d/task/%d/children' % (p, p)) as f:
                pids.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return total


def parse_wrk(text):
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', text).group(1))
    m = re.search(r'99%\s+([\d.]+)(us|ms|s)\b', text)
    p99_ms = float(m.group(1)) * {'us': 0.001, 'ms': 1.0, 's': 1000.0}[m.group(2)]
    errors = re.search(r'Non-2xx or 3xx responses: (\d+)', text)
    sock = re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', text)
    bad = int(errors.group(1)) if errors else 0
    if sock:
        bad += int(sock.group(1)) + int(sock.group(3)) + int(sock.group(4))
    return rps, p99_ms, bad


def run_wrk(port, path, extra, connections, duration):
    cmd = ['wrk', '-t1', '-c%d' % connections, '-d%ds' % duration, '--latency', *extra,
           'http://127.0.0.1:%d%s' % (port, path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    return parse_wrk(out.stdout)


class Server:
    """One peer serving one workload's app on its own port, for the whole of that workload's rounds."""

    def __init__(self, name, workload):
        path, app, _, _, threads = WORKLOADS[workload]
        self.name = name
        self.port = free_port()
        self.log = open(os.path.join(BENCH, 'out', '%s-%s.log' % (name, workload)), 'w')
        self.proc = subprocess.Popen(server_command(name, app, self.port, threads), cwd=BENCH, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.results = []

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def measure(servers, workload, rounds, duration):
    """Every server runs at once, idle but for its turn, and the rounds alternate between them (in a
    rotating order): on a machine whose speed drifts, a slow minute then costs every server a round alike
    instead of costing one server all of its rounds."""
    path, _, extra, connections, threads = WORKLOADS[workload]
    running = []
    try:
        for name in servers:
            server = Server(name, workload)
            running.append(server)
            try:
                wait_ready(server.port, path, server.proc)
                run_wrk(server.port, path, extra, connections, 1)  # warm-up
            except Exception as exc:  # one broken peer must not lose the other measurements
                print('%s on %s failed: %s' % (name, workload, exc), file=sys.stderr)
                running.pop().stop()
        for round_no in range(rounds):
            shift = round_no % max(len(running), 1)
            for server in running[shift:] + running[:shift]:
                try:
                    server.results.append(run_wrk(server.port, path, extra, connections, duration))
                except Exception as exc:
                    print('%s on %s failed in round %d: %s' % (server.name, workload, round_no + 1, exc),
                          file=sys.stderr)
        rows = {}
        for server in running:
            if not server.results:
                continue
            rows[server.name] = {
                'rps': statistics.median(r[0] for r in server.results),
                'rounds': [r[0] for r in server.results],
                'p99': statistics.median(r[1] for r in server.results),
                'errors': sum(r[2] for r in server.results),
                'rss_mib': tree_peak_rss_kib(server.proc.pid) / 1024,
                'connections': connections,
                'threads': threads,
            }
        return rows
    finally:
        for server in running:
            server.stop()


def app_limit(duration):
    out = subprocess.run([os.path.join(BIN, 'python'), os.path.join(BENCH, 'app_limit.py'), str(duration)],
                         cwd=BENCH, capture_output=True, text=True, timeout=duration + 120)
    return float(out.stdout.strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--duration', type=int, default=5)
    parser.add_argument('--servers', default='rwsgi,granian,bjoern,gunicorn,uwsgi,waitress')
    parser.add_argument('--workloads', default='hello,10k,echo100k,django')
    args = parser.parse_args()
    os.makedirs(os.path.join(BENCH, 'out'), exist_ok=True)
    servers = args.servers.split(',')
    print('# rwsgi benchmark: %d rounds x %ds, wrk -t1, median of rounds; %s, %d cores' % (
        args.rounds, args.duration, os.uname().machine, os.cpu_count()))
    for workload in args.workloads.split(','):
        rows = measure(servers, workload, args.rounds, args.duration)
        limit = app_limit(args.duration) if workload == 'django' else None
        path, _, _, connections, threads = WORKLOADS[workload]
        print('\n## %s (%s, %d connections, %d threads for threaded servers)\n' % (
            workload, path, connections, threads))
        header = '| server | req/s (median) | rounds | p99 ms | peak RSS MiB | errors | rwsgi / server |'
        if limit:
            header += ' fraction of app-only limit |'
        print(header)
        print('|' + '---|' * (header.count('|') - 1))
        base = rows.get('rwsgi', {}).get('rps')
        for server, r in rows.items():
            line = '| %s | %.0f | %s | %.2f | %.1f | %d | %s |' % (
                server, r['rps'], ' '.join('%.0f' % x for x in r['rounds']), r['p99'], r['rss_mib'],
                r['errors'], '%.2f' % (base / r['rps']) if base else '-')
            if limit:
                line += ' %.2f |' % (r['rps'] / limit)
            print(line)
        if limit:
            print('\nApp-only limit (Django page in a tight loop, one thread, no server): %.0f req/s' % limit)
        sys.stdout.flush()


if __name__ == '__main__':
    main()
