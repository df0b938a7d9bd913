import time

time.sleep(30)


def application(environ, start_response):
    start_response('200 OK', [])
    return [b'too late']
