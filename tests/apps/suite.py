"""One WSGI app with a route per behaviour the end-to-end tests check. Routes answer JSON unless the
behaviour under test is the response itself."""

import io
import json
import os
import resource
import sys
import threading
import time
from urllib.parse import parse_qs


def _json(start_response, value, status='200 OK'):
    body = json.dumps(value).encode()
    start_response(status, [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])
    return [body]


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get('QUERY_STRING', '')).items()}


def environ_view(environ, start_response):
    shown = {}
    for key, value in environ.items():
        if isinstance(value, str):
            shown[key] = value
        elif isinstance(value, (bool, int, tuple)):
            shown[key] = value
        else:
            shown[key] = '<%s>' % type(value).__name__
    shown['wsgi.file_wrapper.is_type'] = isinstance(environ['wsgi.file_wrapper'], type)
    return _json(start_response, shown)


def input_view(environ, start_response):
    mode = environ['PATH_INFO'].rsplit('/', 1)[1]
    n = int(_query(environ).get('n', '-1'))
    stream = environ['wsgi.input']
    if mode == 'read':
        parts = [stream.read()]
    elif mode == 'read_n':
        parts = []
        while True:
            block = stream.read(n)
            if not block:
                break
            parts.append(block)
    elif mode == 'readline':
        parts = []
        while True:
            line = stream.readline()
            if not line:
                break
            parts.append(line)
    elif mode == 'readline_n':
        parts = []
        while True:
            line = stream.readline(n)
            if not line:
                break
            parts.append(line)
    elif mode == 'readlines':
        parts = stream.readlines(n) if n > 0 else stream.readlines()
        if n > 0:
            # A hint may stop before the end; the rest stays unread.
            return _json(start_response, [p.decode('latin-1') for p in parts])
    elif mode == 'iter':
        parts = list(stream)
    else:
        raise ValueError(mode)
    assert all(isinstance(p, bytes) for p in parts)
    assert stream.read(10) == b'' and stream.readline() == b''
    return _json(start_response, [p.decode('latin-1') for p in parts])


def upload_view(environ, start_response):
    stream = environ['wsgi.input']
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    total = 0
    while True:
        block = stream.read(65536)
        if not block:
            break
        total += len(block)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return _json(start_response, {'bytes': total, 'maxrss_kib_before': before, 'maxrss_kib_after': after})


def echo_view(environ, start_response):
    stream = environ['wsgi.input']
    chunks = []
    while True:
        block = stream.read(16384)
        if not block:
            break
        chunks.append(block)
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    return chunks


BAD_START_RESPONSE = {
    'status_bytes': lambda sr: sr(b'200 OK', []),
    'status_no_reason': lambda sr: sr('200', []),
    'status_crlf': lambda sr: sr('200 OK\r\nX-Injected: 1', []),
    'headers_tuple': lambda sr: sr('200 OK', (('A', 'b'),)),
    'header_not_pair': lambda sr: sr('200 OK', [('A', 'b', 'c')]),
    'header_name_bytes': lambda sr: sr('200 OK', [(b'A', 'b')]),
    'header_value_int': lambda sr: sr('200 OK', [('A', 1)]),
    'header_value_crlf': lambda sr: sr('200 OK', [('A', 'b\r\nX-Injected: 1')]),
    'header_name_space': lambda sr: sr('200 OK', [('Bad Name', 'x')]),
    'hop_by_hop': lambda sr: sr('200 OK', [('Connection', 'close')]),
    'transfer_encoding': lambda sr: sr('200 OK', [('Transfer-Encoding', 'chunked')]),
    'non_latin1': lambda sr: sr('200 OK', [('X-Euro', '\u20ac')]),
}


def start_response_view(environ, start_response):
    case = environ['PATH_INFO'].rsplit('/', 1)[1]
    try:
        BAD_START_RESPONSE[case](start_response)
    except Exception as exc:
        return _json(start_response, {'type': type(exc).__name__, 'message': str(exc)})
    return _json(start_response, {'type': None})


def list_bad_item_view(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'bytes-ok', 12345]


def twice_view(environ, start_response):
    start_response('200 OK', [('Content-Type', 'application/json')])
    try:
        start_response('201 Created', [('Content-Type', 'application/json')])
    except Exception as exc:
        outcome = type(exc).__name__
    else:
        outcome = None
    return [json.dumps({'second_call': outcome}).encode()]


def exc_info_before_view(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    try:
        raise KeyError('boom')
    except KeyError:
        start_response('503 Replaced', [('Content-Type', 'text/plain'), ('X-Replaced', 'yes')], sys.exc_info())
    return [b'replaced']


def exc_info_after_view(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    yield b'first part, '
    try:
        raise KeyError('boom after')
    except KeyError:
        try:
            start_response('500 Oops', [], sys.exc_info())
        except KeyError as reraised:
            yield ('reraised %r' % reraised.args[0]).encode()
            return
    yield b'not reraised'


def write_view(environ, start_response):
    write = start_response('200 OK', [('Content-Type', 'text/plain')])
    write(b'written ')
    write(b'twice, ')
    return [b'then returned']


def stream_view(environ, start_response):
    q = _query(environ)
    n, delay = int(q.get('n', '3')), float(q.get('delay', '0'))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    for i in range(n):
        if i and delay:
            time.sleep(delay)
        yield ('chunk %d\n' % i).encode()


def late_start_view(environ, start_response):
    yield b''
    start_response('202 Accepted', [('Content-Type', 'text/plain')])
    yield b'late'


def cl_more_view(environ, start_response):
    start_response('200 OK', [('Content-Length', '5')])
    return [b'01234', b'56789']


def cl_less_view(environ, start_response):
    start_response('200 OK', [('Content-Length', '10')])
    yield b'01234'


def raise_after_view(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    yield b'partial'
    raise RuntimeError('failed after sending')


def raise_before_view(environ, start_response):
    raise RuntimeError('failed before sending')


class _Closing:
    def __init__(self, marker, n, delay):
        self.marker, self.n, self.delay = marker, n, delay

    def __iter__(self):
        for i in range(self.n):
            if i and self.delay:
                time.sleep(self.delay)
            yield b'x' * 65536

    def close(self):
        with open(self.marker, 'w') as f:
            f.write('closed')


def close_view(environ, start_response):
    q = _query(environ)
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    return _Closing(q['marker'], int(q.get('n', '1')), float(q.get('delay', '0')))


def latin1_view(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain'), ('X-Latin1', 'caf\u00e9 \u00ff')])
    return [b'ok']


def maxrss_view(environ, start_response):
    return _json(start_response, {'maxrss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})


def errors_partial_view(environ, start_response):
    # A line without its newline: logged when the request ends, on its own, with this request's id.
    environ['wsgi.errors'].write(environ.get('QUERY_STRING', ''))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'logged']


def errors_view(environ, start_response):
    environ['wsgi.errors'].write('message to wsgi.errors\n')
    environ['wsgi.errors'].flush()
    print('message to stderr', file=sys.stderr, flush=True)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'logged']


class CountingFile:
    """A real file whose Python-level read() counts its calls."""

    reads = 0

    def __init__(self, path):
        self._f = open(path, 'rb')

    def fileno(self):
        return self._f.fileno()

    def tell(self):
        return self._f.tell()

    def read(self, n=-1):
        CountingFile.reads += 1
        return self._f.read(n)

    def close(self):
        self._f.close()


def file_view(environ, start_response):
    q = _query(environ)
    f = CountingFile(q['path'])
    headers = [('Content-Type', 'application/octet-stream')]
    if 'cl' in q:
        headers.append(('Content-Length', q['cl']))
    start_response('200 OK', headers)
    return environ['wsgi.file_wrapper'](f, 8192)


def file_reads_view(environ, start_response):
    return _json(start_response, {'reads': CountingFile.reads})


def bytesio_view(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return environ['wsgi.file_wrapper'](io.BytesIO(b'from a file-like without fileno ' * 1000), 4096)


def sleep_view(environ, start_response):
    seconds = float(_query(environ).get('s', '0.5'))
    time.sleep(seconds)
    return _json(start_response, {'thread': threading.get_ident(), 'pid': os.getpid()})


_barriers = {}
_barriers_lock = threading.Lock()


def rendezvous_view(environ, start_response):
    # Returns only once `n` requests are inside the app at the same time (or 503 after 10 s): proof of
    # concurrency that does not depend on how quickly the clients happen to connect.
    n = int(_query(environ).get('n', '2'))
    with _barriers_lock:
        barrier = _barriers.setdefault(n, threading.Barrier(n, timeout=10))
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        barrier.reset()
        return _json(start_response, {'error': 'fewer than %d requests ran at once' % n}, '503 Service Unavailable')
    return _json(start_response, {'thread': threading.get_ident(), 'pid': os.getpid()})


def big_view(environ, start_response):
    n = int(_query(environ).get('n', '1000000'))
    start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('Content-Length', str(n))])
    return [b'b' * n]


def mod_wsgi_view(environ, start_response):
    import mod_wsgi
    return _json(start_response, {'version': list(mod_wsgi.version), 'process_group': mod_wsgi.process_group,
                                  'threads_per_process': mod_wsgi.threads_per_process,
                                  'maximum_processes': mod_wsgi.maximum_processes, 'pid': os.getpid()})


def status_view(environ, start_response):
    start_response('299 Custom Reason', [('Content-Type', 'text/plain')])
    return [b'custom']


_running = 0
_max_running = 0
_overlapped = 0
_cpu_requests = 0
_running_lock = threading.Lock()


def cpu_view(environ, start_response):
    """Burns CPU for `ms` milliseconds and records how many requests ran Python at once."""
    global _running, _max_running, _overlapped, _cpu_requests
    with _running_lock:
        _running += 1
        _max_running = max(_max_running, _running)
        _cpu_requests += 1
        _overlapped += _running > 1
    try:
        deadline = time.perf_counter() + float(_query(environ).get('ms', '2')) / 1000
        n = 0
        while time.perf_counter() < deadline:
            n += 1
    finally:
        with _running_lock:
            _running -= 1
    return _json(start_response, {'iterations': n})


def concurrency_view(environ, start_response):
    return _json(start_response, {'max_running': _max_running, 'requests': _cpu_requests,
                                  'overlapped': _overlapped})


_hoard = []


def grow_view(environ, start_response):
    """Keeps `mb` MiB alive in this process, as a leaking app would."""
    mb = int(_query(environ).get('mb', '10'))
    _hoard.append(bytearray(b'x' * (mb * 1024 * 1024)))
    return _json(start_response, {'pid': os.getpid(), 'held_mib': sum(len(b) for b in _hoard) // (1024 * 1024)})


def _thread_name():
    # The OS thread's name: rwsgi's I/O thread ("rwsgi-io") or a pool thread ("rwsgi-python-N").
    with open('/proc/thread-self/comm') as f:
        return f.read().strip()


def thread_view(environ, start_response):
    return _json(start_response, {'thread': _thread_name()})


def stream_threads_view(environ, start_response):
    # One line per chunk naming the thread that produced it.
    n = int(_query(environ).get('n', '100'))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    for _ in range(n):
        yield (_thread_name() + '\n').encode()


def write_many_view(environ, start_response):
    n = int(_query(environ).get('n', '100'))
    write = start_response('200 OK', [('Content-Type', 'text/plain')])
    for i in range(n):
        write(b'%d\n' % i)
    return []


def whoami_view(environ, start_response):
    return _json(start_response, {'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(),
                                  'pid': os.getpid()})


def segfault_view(environ, start_response):
    """Crashes the process the way a broken C extension does."""
    import ctypes
    ctypes.string_at(0)


ROUTES = {
    '/segfault': segfault_view,
    '/whoami': whoami_view,
    '/thread': thread_view,
    '/stream_threads': stream_threads_view,
    '/write_many': write_many_view,
    '/grow': grow_view,
    '/cpu': cpu_view,
    '/concurrency': concurrency_view,
    '/environ': environ_view,
    '/upload': upload_view,
    '/echo': echo_view,
    '/twice': twice_view,
    '/list_bad_item': list_bad_item_view,
    '/exc_info/before': exc_info_before_view,
    '/exc_info/after': exc_info_after_view,
    '/write': write_view,
    '/stream': stream_view,
    '/late_start': late_start_view,
    '/cl/more': cl_more_view,
    '/cl/less': cl_less_view,
    '/raise/after': raise_after_view,
    '/raise/before': raise_before_view,
    '/close': close_view,
    '/latin1': latin1_view,
    '/errors': errors_view,
    '/errors-partial': errors_partial_view,
    '/maxrss': maxrss_view,
    '/file': file_view,
    '/file_reads': file_reads_view,
    '/bytesio': bytesio_view,
    '/sleep': sleep_view,
    '/rendezvous': rendezvous_view,
    '/big': big_view,
    '/mod_wsgi': mod_wsgi_view,
    '/status': status_view,
}


def application(environ, start_response):
    path = environ['PATH_INFO']
    if path.startswith('/environ/'):
        return ROUTES['/environ'](environ, start_response)
    if path.startswith('/input/'):
        return input_view(environ, start_response)
    if path.startswith('/start_response/'):
        return start_response_view(environ, start_response)
    view = ROUTES.get(path)
    if view is None:
        return _json(start_response, {'path': path}, '404 Not Found')
    return view(environ, start_response)
