#!/usr/bin/env python3
"""Shared socket vs --reuse-port with 2 workers: requests/s and how evenly the workers share the work.

Runs `rwsgi serve --processes 2 [--reuse-port]` on the bundled hello app, alternating the two modes for
several rounds of wrk, and reports per round the requests/s and each worker's share of the CPU time the
workers spent (from /proc/PID/stat), whose max/min ratio is the imbalance. Usage: bench/reuseport.py [ROUNDS]
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RWSGI = os.path.join(ROOT, 'target', 'release', 'rwsgi')
TICKS = os.sysconf('SC_CLK_TCK')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def workers(pid):
    with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
        return [int(p) for p in f.read().split()]


def round_of(reuse_port, duration, connections):
    port = free_port()
    args = [RWSGI, 'serve', '--port', str(port), '--processes', '2', '--threads', '8']
    if reuse_port:
        args.append('--reuse-port')
    server = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        for line in server.stderr:
            if 'listening on' in line:
                break
        deadline = time.time() + 20
        while len(workers(server.pid)) < 2 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # both workers importing done and accepting
        pids = workers(server.pid)
        before = {p: cpu_seconds(p) for p in pids}
        out = subprocess.run(['wrk', '-t1', '-c%d' % connections, '-d%ds' % duration,
                              'http://127.0.0.1:%d/' % port], capture_output=True, text=True).stdout
        spent = {p: cpu_seconds(p) - before[p] for p in pids}
        rate = float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1))
        shares = sorted(spent.values())
        return rate, shares[-1] / max(shares[0], 1e-9)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    results = {False: [], True: []}
    for i in range(rounds):
        for mode in ((False, True) if i % 2 == 0 else (True, False)):
            rate, imbalance = round_of(mode, 5, 32)
            results[mode].append((rate, imbalance))
            print('%-12s %9.0f req/s   worker CPU max/min %.2f' % (
                'reuse-port' if mode else 'shared', rate, imbalance), flush=True)
    for mode, name in ((False, 'shared socket'), (True, '--reuse-port')):
        rates = sorted(r for r, _ in results[mode])
        imbalances = sorted(i for _, i in results[mode])
        print('%s: median %.0f req/s, median worker CPU max/min %.2f' % (
            name, rates[len(rates) // 2], imbalances[len(imbalances) // 2]))


if __name__ == '__main__':
    main()
