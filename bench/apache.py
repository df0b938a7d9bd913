#!/usr/bin/env python3
"""Benchmarks rwsgi's Apache module (target/release/libmod_wsgi.so) against the C mod_wsgi from PyPI and
Debian's mod_python, each inside a real Apache httpd with a generated config. Run through bench/apache,
which installs what this needs and builds the module.

  hello   examples/hello.py through WSGIScriptAlias, ours vs C mod_wsgi, wrk, several alternating rounds;
          median requests/s and the ratio ours / C.
  django  the seed's benchmark redone: Siege on the Django test site's /page/ for mod_python (through
          mod_python.wsgi), C mod_wsgi and ours, alternating runs; mean and standard deviation of Siege's
          transaction rate, throughput and response time. mod_python embeds Debian's python3, so C mod_wsgi
          and ours run on it too (contenders c-system, ours-system: Django from a venv of that python3);
          c and ours run again on the bench venv's python, as in the hello table.

--mode daemon runs both parts with every mod_wsgi contender (C and ours; mod_python has no daemon mode and is
left out) in daemon mode, all with the same block: WSGIDaemonProcess bench (--daemon-options, default
processes=1 threads=16, plus the contender's python-home or python-path) + WSGIProcessGroup bench +
WSGIApplicationGroup %{GLOBAL}, WSGISocketPrefix in the Apache's own directory. The Apache MPM block stays the
same, so a request crosses from Apache's worker thread to the daemon's over a UNIX socket. The tables then also
give the CPU each request cost in Apache's child and in the daemon process (from /proc, over the measured runs).

Every contender runs in its own Apache (own ServerRoot, logs, port) with the same MPM block; all of them are
started before the first round and stay up, so rounds alternate between them and the machine's noise falls
on all alike. Prints Markdown tables."""

import argparse
import glob
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import run as standalone  # bench/run.py: free_port, parse_wrk, tree_peak_rss_kib

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
VENV = os.path.realpath(os.path.join(BENCH, '.venv'))  # WSGIPythonHome; bench/.venv may be a symlink
OURS = os.path.join(REPO, 'target', 'release', 'libmod_wsgi.so')
# Debian's python3 (the one libapache2-mod-python embeds): our module built against it (PYO3_PYTHON) and a venv
# of it with Django and the C mod_wsgi, so the Django table can compare all three on one interpreter.
SYSTEM = os.path.join(REPO, 'target', 'bench-system-python')
SYSTEM_OURS = os.path.join(SYSTEM, 'release', 'libmod_wsgi.so')
SYSTEM_VENV = os.path.join(SYSTEM, 'venv')
MODULES = '/usr/lib/apache2/modules'
MOD_PYTHON = os.path.join(MODULES, 'mod_python.so')
HELLO = os.path.join(REPO, 'examples', 'hello.py')
SITE = os.path.join(REPO, 'tests', 'apps', 'django_site')

# One child process with 16 threads; Min/MaxSpareThreads within that child, so Apache never wants a second.
EVENT_1x16 = """StartServers 1
ServerLimit 1
ThreadLimit 16
ThreadsPerChild 16
MaxRequestWorkers 16
MinSpareThreads 1
MaxSpareThreads 16
MaxConnectionsPerChild 0"""

PREAMBLE = """ServerRoot "{dir}"
DefaultRuntimeDir "{dir}"
PidFile "{dir}/httpd.pid"
ErrorLog "{dir}/error.log"
LogLevel warn
Listen 127.0.0.1:{port}
ServerName localhost
User www-data
Group www-data
LoadModule mpm_{mpm}_module {modules}/mod_mpm_{mpm}.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule alias_module {modules}/mod_alias.so
LoadModule mime_module {modules}/mod_mime.so
LoadModule env_module {modules}/mod_env.so
LoadModule access_compat_module {modules}/mod_access_compat.so
TypesConfig /etc/mime.types
KeepAlive On
MaxKeepAliveRequests 0
{mpm_block}
"""

# mod_python imports a module by name; this one loads the site's mysite.wsgi file itself, so all three
# contenders run the very same file.
MOD_PYTHON_SHIM = """import importlib.machinery
import importlib.util

_loader = importlib.machinery.SourceFileLoader('mysite_wsgi', {path!r})
_spec = importlib.util.spec_from_loader('mysite_wsgi', _loader)
_module = importlib.util.module_from_spec(_spec)
_loader.exec_module(_module)
application = _module.application
"""


def c_mod_wsgi(venv=VENV):
    """The .so of the C mod_wsgi installed in a venv (`pip install mod-wsgi`)."""
    out = subprocess.run([os.path.join(venv, 'bin', 'python'), os.path.join(venv, 'bin', 'mod_wsgi-express'),
                          'module-config'], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if line.startswith('LoadModule'):
            return line.split(None, 2)[2].strip().strip('"')
    raise RuntimeError('mod_wsgi-express module-config printed no LoadModule:\n' + out.stdout)


def daemon_block(options, python):
    """The daemon-mode lines every mod_wsgi contender gets alike (--mode daemon): one group, every request
    delegated to it, the main interpreter. python: the contender's python-home= or python-path= option, as
    its embedded config sets WSGIPythonHome or WSGIPythonPath. The socket lives in the Apache's own
    directory (@DIR@), which www-data can traverse."""
    return """WSGISocketPrefix "@DIR@/wsgi"
WSGIDaemonProcess bench {options} {python}
WSGIProcessGroup bench
WSGIApplicationGroup %{{GLOBAL}}
""".format(options=options, python=python)


def wsgi_body(module, script, venv=VENV, daemon=None):
    """What ours and the C module both get: the module, the venv as Python home, one WSGIScriptAlias; in
    daemon mode (daemon: the --daemon-options) also the daemon block, with the venv as the group's Python
    home."""
    where = os.path.dirname(script)
    return """LoadModule wsgi_module "{module}"
WSGIPythonHome "{venv}"
WSGIScriptAlias / "{script}"
<Directory "{where}">
    Require all granted
</Directory>
""".format(module=module, venv=venv, script=script, where=where) + (
        daemon_block(daemon, 'python-home="%s"' % venv) if daemon is not None else '')


def system_site_packages():
    found = glob.glob(os.path.join(SYSTEM_VENV, 'lib', 'python3*', 'site-packages'))
    if not found:
        sys.exit('%s is missing: bench/apache creates it (Debian python3 -m venv, pip install django)' % SYSTEM_VENV)
    return found[0]


def wsgi_system_body(module, script, daemon=None):
    """Ours and the C module on Debian's python3, as mod_python runs it: Python home left at /usr (Debian's
    interpreter finds its lib-dynload only there) and the venv's site-packages on the path, like mod_python's
    PythonPath (in daemon mode: the group's python-path, which is what a daemon process reads)."""
    where = os.path.dirname(script)
    return """LoadModule wsgi_module "{module}"
WSGIPythonPath "{site_packages}"
WSGIScriptAlias / "{script}"
<Directory "{where}">
    Require all granted
</Directory>
""".format(module=module, site_packages=system_site_packages(), script=script, where=where) + (
        daemon_block(daemon, 'python-path="%s"' % system_site_packages()) if daemon is not None else '')


def mod_python_body(shim_dir):
    """mod_python runs Debian's python3; Django comes from the venv made with that same python3."""
    site_packages = system_site_packages()
    return """LoadModule python_module "{mod_python}"
<Location />
    SetHandler mod_python
    PythonHandler mod_python.wsgi
    PythonOption mod_python.wsgi.application mysite_shim::application
    PythonPath "[{shim_dir!r}, {site_packages!r}] + sys.path"
</Location>
""".format(mod_python=MOD_PYTHON, shim_dir=shim_dir, site_packages=site_packages)


class Apache:
    """apache2 -f CONF -DFOREGROUND in its own session (prefork signals its whole process group on stop)."""

    def __init__(self, name, body, mpm='event', mpm_block=EVENT_1x16):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix='rwsgi-bench-apache-%s-' % name)
        os.chmod(self.dir, 0o755)  # the children run as www-data
        self.port = standalone.free_port()
        self.conf = os.path.join(self.dir, 'httpd.conf')
        with open(self.conf, 'w') as f:
            f.write(PREAMBLE.format(dir=self.dir, port=self.port, mpm=mpm, modules=MODULES,
                                    mpm_block=mpm_block))
            f.write(body.replace('@DIR@', self.dir))
        self.stderr = open(os.path.join(self.dir, 'stderr.log'), 'w')
        self.proc = subprocess.Popen(['apache2', '-f', self.conf, '-DFOREGROUND'], cwd=self.dir,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                     start_new_session=True)
        self.children = set()
        self.daemons = set()  # daemon-mode processes (children of the parent that do not hold the listener)

    def url(self, path):
        return 'http://127.0.0.1:%d%s' % (self.port, path)

    def log(self):
        text = ''
        for name in ('stderr.log', 'error.log'):
            try:
                with open(os.path.join(self.dir, name)) as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def get(self, path, timeout=60):
        """Waits until path answers 200 (the first request imports the app) and returns the body."""
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError('%s: apache2 exited with %s:\n%s' % (self.name, self.proc.returncode,
                                                                         self.log()[-4000:]))
            try:
                with urllib.request.urlopen(self.url(path), timeout=30) as r:
                    if r.status == 200:
                        return r.read()
            except Exception as exc:
                if time.time() > deadline:
                    raise RuntimeError('%s: %s never answered 200 (%s):\n%s' % (self.name, path, exc,
                                                                                 self.log()[-4000:]))
                time.sleep(0.2)

    def roles(self):
        """{pid: 'child' or 'daemon'} for the parent's children now: those holding Apache's listening TCP
        socket are its MPM children; the others are mod_wsgi daemon processes (which both modules fork from
        the parent and keep off Apache's listener)."""
        try:
            with open('/proc/%d/task/%d/children' % (self.proc.pid, self.proc.pid)) as f:
                pids = [int(c) for c in f.read().split()]
        except OSError:
            return {}
        listeners = set()
        with open('/proc/net/tcp') as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1].endswith(':%04X' % self.port) and fields[3] == '0A':  # 0A: LISTEN
                    listeners.add('socket:[%s]' % fields[9])
        roles = {}
        for pid in pids:
            try:
                fds = {os.readlink(os.path.join('/proc/%d/fd' % pid, fd)) for fd in os.listdir('/proc/%d/fd' % pid)}
            except OSError:
                continue
            roles[pid] = 'child' if fds & listeners else 'daemon'
        return roles

    def note_children(self):
        """Remembers the worker processes alive now (the brief: one child, never a second), and apart from them
        the daemon processes (--mode daemon: one, never a second)."""
        for pid, role in self.roles().items():
            (self.children if role == 'child' else self.daemons).add(pid)

    def cpu_seconds(self):
        """{'child': s, 'daemon': s}: user + system CPU time so far of the MPM children and of the daemon
        processes alive now; a round's difference is what that round cost each side."""
        total = {'child': 0.0, 'daemon': 0.0}
        for pid, role in self.roles().items():
            try:
                with open('/proc/%d/stat' % pid) as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            total[role] += (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')  # utime, stime
        return total

    def peak_rss_mib(self):
        return standalone.tree_peak_rss_kib(self.proc.pid) / 1024

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.stderr.close()


def start_all(specs):
    servers = []
    try:
        for name, body in specs:
            servers.append(Apache(name, body))
        return servers
    except Exception:
        for s in servers:
            s.stop()
        raise


def keep_logs(servers, tag):
    os.makedirs(os.path.join(BENCH, 'out'), exist_ok=True)
    for s in servers:
        for name in ('httpd.conf', 'error.log', 'stderr.log'):
            src = os.path.join(s.dir, name)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(BENCH, 'out', 'apache-%s-%s-%s' % (tag, s.name, name)))
        shutil.rmtree(s.dir, ignore_errors=True)


def run_wrk(port, path, connections, duration):
    """(req/s, p99 ms, errors, reconnects, requests): errors as bench/run.py counts them (non-2xx, connect,
    write, timeout); reconnects are wrk's read errors, keep-alive connections Apache closed (the event MPM closes
    idle ones whenever all its workers are busy), after which wrk connects again."""
    cmd = ['wrk', '-t1', '-c%d' % connections, '-d%ds' % duration, '--latency',
           'http://127.0.0.1:%d%s' % (port, path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    rps, p99, bad = standalone.parse_wrk(out)
    m = re.search(r'Socket errors: connect \d+, read (\d+)', out)
    n = re.search(r'(\d+) requests in', out)
    return rps, p99, bad, int(m.group(1)) if m else 0, int(n.group(1)) if n else 0


def orders(names, rounds):
    """Round i starts with contender i mod n, so none is always first (or always right after a warm-up)."""
    for i in range(rounds):
        k = i % len(names)
        yield names[k:] + names[:k]


def check_daemon(s, args):
    """--mode daemon: the group must really exist (a module that accepted the directives but served in
    Apache's child would measure embedded mode under the daemon heading)."""
    if args.daemon is not None:
        s.note_children()
        if not s.daemons:
            raise RuntimeError('%s: no daemon process beside the Apache child (children: %s):\n%s' % (
                s.name, s.roles(), s.log()[-4000:]))


def cpu_per_request(before, after, requests):
    """µs of CPU per request in the Apache child and in the daemon process over one measured run."""
    return {role: 1e6 * (after[role] - before[role]) / requests if requests else 0.0 for role in before}


def mode_title(args):
    return '' if args.daemon is None else ', daemon mode: WSGIDaemonProcess bench %s' % args.daemon


def bench_hello(args):
    specs = [('ours', wsgi_body(args.ours, HELLO, daemon=args.daemon)),
             ('c', wsgi_body(c_mod_wsgi(), HELLO, daemon=args.daemon))]
    servers = start_all(specs)
    by_name = {s.name: s for s in servers}
    results = {s.name: [] for s in servers}
    cpu = {s.name: [] for s in servers}
    try:
        for s in servers:
            body = s.get('/')
            if body != b'Hello World!':
                raise RuntimeError('%s answered %r' % (s.name, body))
            check_daemon(s, args)
            run_wrk(s.port, '/', args.connections, 2)  # warm-up: every thread, every path
        for order in orders(list(by_name), args.rounds):
            for name in order:
                s = by_name[name]
                before = s.cpu_seconds()
                results[name].append(run_wrk(s.port, '/', args.connections, args.duration))
                cpu[name].append(cpu_per_request(before, s.cpu_seconds(), results[name][-1][4]))
                s.note_children()
                print('  hello %-4s %8.0f req/s' % (name, results[name][-1][0]), file=sys.stderr, flush=True)
        rss = {s.name: s.peak_rss_mib() for s in servers}
    finally:
        for s in servers:
            s.stop()
        keep_logs(servers, 'hello' if args.daemon is None else 'daemon-hello')

    label = {'ours': 'rwsgi libmod_wsgi.so', 'c': 'C mod_wsgi %s' % args.c_version}
    print('\n### hello (examples/hello.py at /, wrk -t1 -c%d, %d rounds x %d s, event MPM 1 child x 16 '
          'threads%s)\n' % (args.connections, args.rounds, args.duration, mode_title(args)))
    if args.daemon is None:
        print('| module | req/s (median) | rounds (in run order) | p99 ms (median) | peak RSS MiB | errors | '
              'reconnects | Apache children seen |')
        print('|---|---|---|---|---|---|---|---|')
    else:
        print('| module | req/s (median) | rounds (in run order) | p99 ms (median) | peak RSS MiB | errors | '
              'reconnects | Apache children / daemon processes seen | CPU µs/request: Apache child, daemon '
              '(median) |')
        print('|---|---|---|---|---|---|---|---|---|')
    for name in ('ours', 'c'):
        r = results[name]
        row = '| %s | %.0f | %s | %.2f | %.1f | %d | %d | %d' % (
            label[name], statistics.median(x[0] for x in r), ' '.join('%.0f' % x[0] for x in r),
            statistics.median(x[1] for x in r), rss[name], sum(x[2] for x in r), sum(x[3] for x in r),
            len(by_name[name].children))
        if args.daemon is not None:
            row += ' / %d | %.1f, %.1f' % (len(by_name[name].daemons),
                                            statistics.median(c['child'] for c in cpu[name]),
                                            statistics.median(c['daemon'] for c in cpu[name]))
        print(row + ' |')
    ours = statistics.median(x[0] for x in results['ours'])
    c = statistics.median(x[0] for x in results['c'])
    paired = [o[0] / k[0] for o, k in zip(results['ours'], results['c'])]
    print('\nours / C: **%.2f** (ratio of the medians); per round %s, median %.2f, range %.2f–%.2f. '
          'Target: ≥ 1.10.' % (ours / c, ' '.join('%.2f' % p for p in paired), statistics.median(paired),
                                min(paired), max(paired)))
    sys.stdout.flush()


def siege_rc(dir):
    """Siege's settings for these runs, instead of ~/.siege/siege.conf: no HTML parsing (no extra requests
    for page assets), keep-alive, no delay, JSON summary on stdout, no log file."""
    path = os.path.join(dir, 'siegerc')
    with open(path, 'w') as f:
        f.write('verbose = false\nquiet = true\njson_output = true\nshow-logfile = false\nlogging = false\n'
                'parser = false\nprotocol = HTTP/1.1\nchunked = true\ncache = false\n'
                'connection = close\ndelay = 0.0\nbenchmark = true\naccept-encoding = \n'
                'limit = 1024\nfailures = 1024\n')
    return path


def run_siege(rc, url, concurrency, seconds):
    cmd = ['siege', '--rc=%s' % rc, '-b', '-c%d' % concurrency, '-t%dS' % seconds, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    text = out.stdout
    start = text.find('{')
    if start < 0:
        raise RuntimeError('siege printed no JSON summary:\n%s\n%s' % (out.stdout, out.stderr))
    return json.loads(text[start:text.rindex('}') + 1])


def mean_sd(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def bench_django(args):
    if args.daemon is not None and 'mod_python' in args.django_contenders.split(','):
        sys.exit('mod_python has no daemon mode: leave it out of --django-contenders with --mode daemon')
    shim_dir = tempfile.mkdtemp(prefix='rwsgi-bench-mod-python-')
    os.chmod(shim_dir, 0o755)
    with open(os.path.join(shim_dir, 'mysite_shim.py'), 'w') as f:
        f.write(MOD_PYTHON_SHIM.format(path=os.path.join(SITE, 'mysite.wsgi')))
    os.chmod(os.path.join(shim_dir, 'mysite_shim.py'), 0o644)
    script = os.path.join(SITE, 'mysite.wsgi')
    wanted = args.django_contenders.split(',')
    specs = []
    for name in wanted:
        if name == 'mod_python':
            specs.append((name, mod_python_body(shim_dir)))
        elif name == 'c-system':
            specs.append((name, wsgi_system_body(c_mod_wsgi(SYSTEM_VENV), script, daemon=args.daemon)))
        elif name == 'ours-system':
            specs.append((name, wsgi_system_body(SYSTEM_OURS, script, daemon=args.daemon)))
        elif name == 'c':
            specs.append((name, wsgi_body(c_mod_wsgi(), script, daemon=args.daemon)))
        elif name == 'ours':
            specs.append((name, wsgi_body(args.ours, script, daemon=args.daemon)))
        else:
            sys.exit('unknown Django contender %r' % name)
    rc = siege_rc(shim_dir)
    servers = start_all(specs)
    by_name = {s.name: s for s in servers}
    results = {s.name: [] for s in servers}
    cpu = {s.name: [] for s in servers}
    try:
        bodies = {s.name: s.get('/page/') for s in servers}
        if len(set(bodies.values())) != 1:
            raise RuntimeError('the contenders serve different pages: %s' % {
                k: len(v) for k, v in bodies.items()})
        for s in servers:
            check_daemon(s, args)
        for s in servers:  # warm-up
            run_siege(rc, s.url('/page/'), args.concurrency, 3)
        for order in orders(list(by_name), args.siege_runs):
            for name in order:
                s = by_name[name]
                before = s.cpu_seconds()
                results[name].append(run_siege(rc, s.url('/page/'), args.concurrency, args.siege_time))
                cpu[name].append(cpu_per_request(before, s.cpu_seconds(), results[name][-1]['transactions']))
                s.note_children()
                r = results[name][-1]
                print('  django %-10s %7.1f trans/s %6.3f MB/s %6.3f s  failed %d' % (
                    name, r['transaction_rate'], r['throughput'], r['response_time'],
                    r['failed_transactions']), file=sys.stderr, flush=True)
        rss = {s.name: s.peak_rss_mib() for s in servers}
    finally:
        for s in servers:
            s.stop()
        keep_logs(servers, 'django' if args.daemon is None else 'daemon-django')
        shutil.rmtree(shim_dir, ignore_errors=True)

    label = {'mod_python': 'mod_python %s' % args.mod_python_version.split('+')[0],
             'c-system': 'C mod_wsgi %s' % args.c_version, 'ours-system': 'rwsgi libmod_wsgi.so',
             'c': 'C mod_wsgi %s' % args.c_version, 'ours': 'rwsgi libmod_wsgi.so'}
    python = {'mod_python': 'Debian %s' % args.system_python, 'c-system': 'Debian %s' % args.system_python,
              'ours-system': 'Debian %s' % args.system_python, 'c': 'pyenv %s' % args.venv_python,
              'ours': 'pyenv %s' % args.venv_python}
    print('\n### django (/page/ of tests/apps/django_site, siege -b -c%d -t%dS, connection close, %d runs '
          'each, event MPM 1 child x 16 threads%s)\n' % (args.concurrency, args.siege_time, args.siege_runs,
                                                          mode_title(args)))
    daemon_head, daemon_rule = '', ''
    if args.daemon is not None:
        daemon_head, daemon_rule = ' CPU µs/transaction: Apache child, daemon (mean) |', '---|'
    print('| module | Python | transaction rate, trans/s | throughput, MB/s | response time, ms | '
          'runs: trans/s (in run order) | transactions | failed | peak RSS MiB |' + daemon_head)
    print('|---|---|---|---|---|---|---|---|---|' + daemon_rule)
    for name in by_name:
        r = results[name]
        rate = mean_sd([x['transaction_rate'] for x in r])
        thr = mean_sd([x['data_transferred'] / x['elapsed_time'] for x in r])
        rt = mean_sd([1000 * x['concurrency'] / x['transaction_rate'] for x in r])
        row = '| %s | %s | %.1f ± %.1f | %.3f ± %.3f | %.1f ± %.1f | %s | %d | %d | %.1f |' % (
            label[name], python[name], rate[0], rate[1], thr[0], thr[1], rt[0], rt[1],
            ' '.join('%.1f' % x['transaction_rate'] for x in r), sum(x['transactions'] for x in r),
            sum(x['failed_transactions'] for x in r), rss[name])
        if args.daemon is not None:
            row += ' %.0f, %.0f |' % (statistics.mean(c['child'] for c in cpu[name]),
                                      statistics.mean(c['daemon'] for c in cpu[name]))
        print(row)
    print()
    for a, b in (('ours-system', 'c-system'), ('ours-system', 'mod_python'), ('ours', 'c'),
                 ('c-system', 'mod_python')):
        if a in results and b in results:
            ra = [x['transaction_rate'] for x in results[a]]
            rb = [x['transaction_rate'] for x in results[b]]
            print('- %s / %s (%s), mean transaction rates: **%.2f** (per run %s)' % (
                label[a].split(' ')[0] if a.startswith('ours') else label[a], label[b],
                python[b], statistics.mean(ra) / statistics.mean(rb),
                ' '.join('%.2f' % (x / y) for x, y in zip(ra, rb))))
    print('\n± is the sample standard deviation of the %d runs. Throughput is Siege\'s data transferred / elapsed '
          'time, response time its concurrency / transaction rate (= its mean response time, which it prints '
          'rounded to 10 ms). Apache children seen: %s.' % (
              args.siege_runs, ', '.join('%s %d' % (s.name, len(s.children)) for s in servers)) + (
              '' if args.daemon is None else ' Daemon processes seen: %s.' % ', '.join(
                  '%s %d' % (s.name, len(s.daemons)) for s in servers)))
    sys.stdout.flush()


def check_access(ours):
    """The children run as www-data: they must reach the apps and the Python installations."""
    paths = [HELLO, os.path.join(SITE, 'mysite.wsgi'), os.path.join(VENV, 'bin', 'python'), ours,
             os.path.join(SYSTEM_VENV, 'bin', 'python'), SYSTEM_OURS]
    for path in filter(os.path.exists, paths):
        if subprocess.run(['su', '-s', '/bin/sh', 'www-data', '-c', 'test -r "$0"', path]).returncode:
            sys.exit('www-data cannot read %s: make its directories searchable (scripts/test does, '
                     'chmod o+x on each directory above it)' % path)


def version_of(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    return (out.stdout.strip() or out.stderr.strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--parts', default='hello,django')
    parser.add_argument('--mode', choices=('embedded', 'daemon'), default='embedded',
                        help='daemon: every mod_wsgi contender runs the app in one WSGIDaemonProcess group')
    parser.add_argument('--daemon-options', default='processes=1 threads=16',
                        help='--mode daemon: WSGIDaemonProcess options, the same for every contender')
    parser.add_argument('--ours', default=OURS, help="rwsgi's module (default: the release build)")
    parser.add_argument('--rounds', type=int, default=7, help='hello: wrk rounds per module')
    parser.add_argument('--duration', type=int, default=5, help='hello: seconds per wrk round')
    parser.add_argument('--connections', type=int, default=16,
                        help='hello: wrk connections (default: one per Apache worker thread)')
    parser.add_argument('--siege-runs', type=int, default=3)
    parser.add_argument('--siege-time', type=int, default=20, help='django: seconds per Siege run')
    parser.add_argument('--concurrency', type=int, default=25, help="django: Siege users (Siege's default)")
    parser.add_argument('--django-contenders', default=None,
                        help='-system: on Debian\'s python3 (as mod_python); c, ours: on the bench venv\'s '
                             '(default: mod_python,c-system,ours-system,c,ours; with --mode daemon: c,ours)')
    args = parser.parse_args()
    args.daemon = args.daemon_options if args.mode == 'daemon' else None
    if args.django_contenders is None:
        args.django_contenders = 'c,ours' if args.daemon is not None else 'mod_python,c-system,ours-system,c,ours'
    args.ours = os.path.abspath(args.ours)
    if os.geteuid() != 0:
        sys.exit('run as root: Apache switches its children to www-data')
    check_access(args.ours)
    py = os.path.join(VENV, 'bin', 'python')
    args.c_version = version_of([py, '-c', 'import importlib.metadata as m; print(m.version("mod-wsgi"))'])
    args.venv_python = version_of([py, '-c', 'import platform; print(platform.python_version())'])
    args.system_python = version_of(['/usr/bin/python3', '-c', 'import platform; print(platform.python_version())'])
    args.mod_python_version = version_of(['dpkg-query', '-W', '-f=${Version}', 'libapache2-mod-python'])
    commit = version_of(['git', '-C', REPO, 'log', '-1', '--format=%h %s'])
    dirty = version_of(['git', '-C', REPO, 'status', '--short', '--', 'crates', 'Cargo.toml', 'Cargo.lock'])
    print('# rwsgi Apache benchmark%s: %s; %s, %d cores; commit %s%s; module %sbuilt %s; C mod_wsgi %s; '
          'libapache2-mod-python %s; %s' % (
              ' (daemon mode)' if args.daemon is not None else '',
              version_of(['apache2', '-v']).splitlines()[0].split(': ')[-1], os.uname().machine, os.cpu_count(),
              commit, ' (crates/ with uncommitted changes)' if dirty else '',
              '' if args.ours == OURS else '%s, ' % args.ours,
              time.strftime('%Y-%m-%d %H:%M', time.localtime(os.path.getmtime(args.ours))), args.c_version,
              args.mod_python_version, version_of(['siege', '--version']).splitlines()[0] if shutil.which('siege')
              else 'no siege'))
    parts = args.parts.split(',')
    if 'hello' in parts:
        bench_hello(args)
    if 'django' in parts:
        bench_django(args)


if __name__ == '__main__':
    main()
