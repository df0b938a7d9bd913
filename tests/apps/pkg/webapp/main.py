import sys


def app(environ, start_response):
    body = ('module app; prefix=%s' % sys.prefix).encode()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
