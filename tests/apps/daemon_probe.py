"""Says where it runs: which process, group and interpreter, for the daemon-mode tests."""
import json
import os
import signal
import sys
import time


def application(environ, start_response):
    path = environ.get('PATH_INFO', '')
    environ['wsgi.errors'].write('daemon_probe called for %s\n' % path)
    if path == '/die_before_head':
        os.kill(os.getpid(), signal.SIGKILL)
    if path == '/die_mid_body':
        def body():
            yield b'first part, '
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGKILL)
            yield b'never sent'
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return body()
    if path == '/huge':
        # More than one frame of the daemon protocol can hold (16 MiB).
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return [b'x' * (17 * 1024 * 1024)]
    if path == '/sleep':
        seconds = float(environ.get('QUERY_STRING', '').partition('=')[2] or '1')
        time.sleep(seconds)
    if path == '/hold_gil':
        # Catastrophic backtracking: the regex engine runs for a long time without releasing the GIL, as
        # a misbehaving C extension would.
        import re
        re.match(r'(a+)+$', 'a' * 31 + 'b')
    if path == '/spin':
        # Pure Python, so a stack dump shows this frame.
        end = time.time() + float(environ.get('QUERY_STRING', '').partition('=')[2] or '1')
        while time.time() < end:
            pass
    body = json.dumps({
        'pid': os.getpid(),
        'uid': os.getuid(),
        'prefix': sys.prefix,
        'process_group': environ['mod_wsgi.process_group'],
        'application_group': environ['mod_wsgi.application_group'],
        'multithread': environ['wsgi.multithread'],
        'multiprocess': environ['wsgi.multiprocess'],
        'threads': __import__('mod_wsgi').threads_per_process,
        'cwd': os.getcwd(),
        'lang': os.environ.get('LANG'),
    }).encode()
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(body)))])
    return [body]
