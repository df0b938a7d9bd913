import os
import sys


def custom(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('served by %s as %s' % (os.path.basename(__file__), __name__)).encode()]
