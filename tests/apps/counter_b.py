import json
import sys

import mod_wsgi
import shared_counter


def application(environ, start_response):
    body = json.dumps({
        'count': shared_counter.bump(),
        'group': environ['mod_wsgi.application_group'],
        'module_group': mod_wsgi.application_group,
        'modules_id': id(sys.modules),
    }).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]
