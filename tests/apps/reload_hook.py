"""A script with mod_wsgi's reload_required(resource) hook, driven by files in /tmp/rwsgi-reload-hook."""
import os
import time

LOAD_ID = str(time.time_ns())
FLAGS = '/tmp/rwsgi-reload-hook'


def reload_required(resource):
    if os.path.exists(os.path.join(FLAGS, 'raise')):
        raise RuntimeError('reload hook raising on purpose for %s' % resource)
    try:
        os.unlink(os.path.join(FLAGS, 'reload'))
        return True
    except FileNotFoundError:
        return False


def application(environ, start_response):
    if environ.get('QUERY_STRING') == 'strip':
        import sys
        sys.modules[__name__].__dict__.pop('__mtime__', None)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [LOAD_ID.encode()]
