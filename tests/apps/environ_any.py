"""Answers every request, whatever its method and path, with suite.py's environ view: as JSON in the body and,
since a HEAD response has no body, also in an X-Environ header (json.dumps writes ASCII). Mounted at / by
tests/httpd_parity.rs, for the requests suite.py's routes cannot see: HEAD, and paths outside /environ."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    '_environ_any_suite', os.path.join(os.path.dirname(__file__), 'suite.py'))
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)


def application(environ, start_response):
    captured = []

    def capture(status, headers, exc_info=None):
        captured.append((status, headers))

    body = b''.join(_suite.environ_view(environ, capture))
    status, headers = captured[0]
    start_response(status, headers + [('X-Environ', body.decode('ascii'))])
    return [body]
