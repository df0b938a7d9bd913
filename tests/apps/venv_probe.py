import json
import sys


def application(environ, start_response):
    try:
        import django
        django_version = django.get_version()
    except ImportError:
        django_version = None
    body = json.dumps({'prefix': sys.prefix, 'base_prefix': sys.base_prefix, 'django': django_version,
                       'executable': sys.executable}).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]
