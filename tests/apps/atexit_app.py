# Registers an atexit hook: a stopping Apache child must run it, in this app's own interpreter.
import atexit
import sys

import mod_wsgi

_group = mod_wsgi.application_group


def _goodbye():
    sys.stderr.write('atexit ran in group %r\n' % _group)
    sys.stderr.flush()


atexit.register(_goodbye)


def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'registered']
