"""The app-only limit: the Django page rendered in a tight loop in one thread with a prebuilt environ, no
server at all. No server can beat this at one process; servers are reported as a fraction of it."""

import io
import sys
import time

import django_app

DURATION = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0


def environ():
    return {
        'REQUEST_METHOD': 'GET', 'SCRIPT_NAME': '', 'PATH_INFO': '/page/', 'QUERY_STRING': '',
        'SERVER_NAME': '127.0.0.1', 'SERVER_PORT': '8000', 'SERVER_PROTOCOL': 'HTTP/1.1',
        'REMOTE_ADDR': '127.0.0.1', 'HTTP_HOST': '127.0.0.1:8000', 'wsgi.version': (1, 0),
        'wsgi.url_scheme': 'http', 'wsgi.input': io.BytesIO(b''), 'wsgi.errors': sys.stderr,
        'wsgi.multithread': True, 'wsgi.multiprocess': False, 'wsgi.run_once': False,
    }


def start_response(status, headers, exc_info=None):
    return None


def main():
    app = django_app.application
    count = 0
    deadline = time.perf_counter() + DURATION
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        result = app(environ(), start_response)
        for _ in result:
            pass
        result.close()
        count += 1
    print('%.1f' % (count / (time.perf_counter() - started)))


main()
