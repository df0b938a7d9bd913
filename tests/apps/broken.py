import json

def helper():
    raise ImportError('this app cannot be imported: missing_dependency_for_test')

helper()

def application(environ, start_response):
    start_response('200 OK', [])
    return [b'unreachable']
