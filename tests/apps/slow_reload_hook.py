"""A script whose reload_required() hook takes its time (and releases the GIL while it does), as a hook
that stats many files or asks a service might: requests arriving together must neither deadlock nor wait
for each other's hook."""
import time


def reload_required(resource):
    time.sleep(0.3)
    return False


def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
