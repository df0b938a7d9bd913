# Shows the shape of mod_wsgi.server_metrics(): None, or its keys and types, the scoreboard's size, and the
# worker that serves this very request.
import json
import time

import mod_wsgi


def _types(d):
    return {k: type(v).__name__ for k, v in d.items()}


def application(environ, start_response):
    board = mod_wsgi.server_metrics()
    if board is None:
        shown = None
    else:
        processes = board['processes']
        workers = [w for p in processes for w in p['workers']]
        # With ExtendedStatus Off (Apache's default without mod_status) workers do not record request lines.
        me = [w for w in workers if w['status'] == 'W']
        shown = {
            'types': _types(board),
            'process_types': _types(processes[0]),
            'worker_types': _types(workers[0]),
            'processes': len(processes),
            'server_limit': board['server_limit'],
            'workers_per_process': sorted({len(p['workers']) for p in processes}),
            'thread_limit': board['thread_limit'],
            'statuses': sorted({w['status'] for w in workers}),
            'serving_me': len(me),
            'requests_shown': sorted({w['request'] for w in me}),
            'clock_skew': abs(board['current_time'] - time.time()) < 5,
            'my_process_listed': any(p['pid'] > 0 for p in processes),
        }
    body = json.dumps(shown).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]
