import json
import os


def _answer(name, environ, start_response):
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps({'callable': name, 'group': environ['mod_wsgi.application_group'],
                        'process_group': environ['mod_wsgi.process_group'], 'pid': os.getpid()}).encode()]


def application(environ, start_response):
    return _answer('application', environ, start_response)


def alternate(environ, start_response):
    return _answer('alternate', environ, start_response)
