# Imported at process start by WSGIImportScript, then served by WSGIScriptAlias from the same module.
import json
import time

import mod_wsgi
import shared_counter

IMPORTED_AT = time.time()
IMPORTED_IN_GROUP = mod_wsgi.application_group
EXECUTIONS = shared_counter.bump()


def application(environ, start_response):
    body = json.dumps({'imported_at': IMPORTED_AT, 'group': IMPORTED_IN_GROUP,
                       'executions': EXECUTIONS}).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]
