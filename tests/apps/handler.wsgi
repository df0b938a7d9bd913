# A WSGIHandlerScript: Apache sends every request whose handler is its name to handle_request.
import json


def handle_request(environ, start_response):
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps({key: environ[key] for key in (
        'SCRIPT_FILENAME', 'mod_wsgi.handler_script', 'mod_wsgi.request_handler',
        'mod_wsgi.callable_object')}).encode()]
