# Exercises the mod_wsgi module's API: event subscriptions, request_data(), active_requests and the metrics
# accessors. With MOD_WSGI_API_QUIET set it subscribes to nothing, so requests take the untracked path.
import json
import os
import sys
import threading

import mod_wsgi

QUIET = bool(os.environ.get('MOD_WSGI_API_QUIET'))

_lock = threading.Lock()
_events = []
_release = threading.Event()

try:
    mod_wsgi.request_data()
    _import_time_request_data = 'no error'
except RuntimeError as e:
    _import_time_request_data = 'RuntimeError: %s' % e

_KEPT = ('request_id', 'thread_id', 'server_pid', 'status', 'response_status', 'input_length', 'input_reads',
         'output_length', 'output_writes', 'callable_object', 'shutdown_reason', 'merged_by_first')


def _summary(name, event):
    summary = {'name': name, 'keys': sorted(event)}
    for key in _KEPT:
        if key in event:
            summary[key] = event[key]
    environ = event.get('request_environ')
    if environ is not None:
        summary['path'] = environ.get('PATH_INFO')
    data = event.get('request_data')
    if data is not None:
        summary['request_data'] = {k: v for k, v in data.items() if isinstance(v, (str, int))}
        summary['path'] = data.get('path', summary.get('path'))
    if event.get('exception_info'):
        exc_type, value, tb = event['exception_info']
        summary['exception'] = '%s: %s' % (exc_type.__name__, value)
        summary['has_traceback'] = tb is not None
    if 'response_headers' in event:
        summary['response_headers'] = [list(h) for h in event['response_headers']]
    if name == 'request_started':
        summary['times_ok'] = 0 < event['request_start'] <= event['application_start']
        summary['app_is_callable'] = callable(event['application_object'])
    if name == 'request_finished':
        summary['times_ok'] = (0 < event['request_start'] <= event['application_start']
                               <= event['application_finish'] and event['application_time'] >= 0
                               and event['cpu_time'] >= 0 and event['gil_wait_time'] >= 0)
    return summary


def _wrap(app):
    def wrapper(environ, start_response):
        body = b''.join(app(environ, start_response))
        return [b'wrapped ' + body]
    return wrapper


def first(name, **event):
    if name == 'request_started':
        data = event['request_data']
        data['seen_by'] = 'first'
        data['path'] = event['request_environ'].get('PATH_INFO')
        update = {'merged_by_first': True}
        if data['path'] == '/wrapped':
            update['application_object'] = _wrap(event['application_object'])
        return update


def second(name, **event):
    with _lock:
        _events.append(_summary(name, event))
    if name == 'process_stopping':
        sys.stderr.write('event subscriber saw process_stopping, reason %r\n' % event['shutdown_reason'])
        sys.stderr.flush()


def failing(name, **event):
    data = event.get('request_data') or {}
    if name == 'request_started' and data.get('path') == '/callback_error':
        raise ValueError('subscriber failed on purpose')


def cleanup(name, **event):
    sys.stderr.write('shutdown subscriber called with %r, reason %r\n' % (name, event['shutdown_reason']))
    sys.stderr.flush()


def ignored_signal_handler(name, **event):
    pass


if not QUIET:
    # The decorator form returns the callback; so does the plain call.
    first = mod_wsgi.subscribe_events(first)
    assert mod_wsgi.subscribe_events(second) is second
    mod_wsgi.subscribe_events(failing)
    assert mod_wsgi.subscribe_shutdown(cleanup) is cleanup
    assert mod_wsgi.subscribe_signals(ignored_signal_handler) is ignored_signal_handler


def _json(start_response, value, status='200 OK'):
    body = json.dumps(value).encode()
    start_response(status, [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])
    return [body]


def _own_entry():
    """This request's entry in active_requests: the one carrying our request_data()."""
    mine = mod_wsgi.request_data()
    for request_id, entry in list(mod_wsgi.active_requests.items()):
        if entry['request_data'] is mine:
            return request_id, entry
    return None, None


def application(environ, start_response):
    path = environ['PATH_INFO']
    data = mod_wsgi.request_data()
    assert data is mod_wsgi.request_data()
    data['app'] = 'set by the app'
    if path == '/hello':
        request_id, entry = _own_entry()
        return _json(start_response, {
            'request_data': {k: v for k, v in data.items() if isinstance(v, str)},
            'own_entry_keys': sorted(entry) if entry else None,
            'own_entry_id_matches': bool(entry) and entry['request_id'] == request_id,
            'import_time_request_data': _import_time_request_data,
        })
    if path == '/created':
        start_response('201 Created', [('Content-Type', 'text/plain'), ('X-Test', 'yes')])
        return [b'created']
    if path == '/wrapped':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'app']
    if path == '/raise':
        raise ValueError('the app failed on purpose')
    if path == '/callback_error':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'still served']
    if path == '/post':
        body = environ['wsgi.input'].read()
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'got ', body]
    if path == '/events':
        with _lock:
            events = list(_events)
        return _json(start_response, events)
    if path == '/other_thread':
        result = []

        def probe():
            try:
                mod_wsgi.request_data()
                result.append('no error')
            except RuntimeError as e:
                result.append('RuntimeError: %s' % e)
        thread = threading.Thread(target=probe)
        thread.start()
        thread.join(10)
        return _json(start_response, result)
    if path == '/slow':
        released = _release.wait(10)
        return _json(start_response, {'released': released})
    if path == '/release':
        _release.set()
        return _json(start_response, 'released')
    if path == '/active':
        paths = sorted(entry['request_environ']['PATH_INFO'] for entry in mod_wsgi.active_requests.values())
        return _json(start_response, {'paths': paths, 'listed': 'active_requests' in dir(mod_wsgi)})
    if path == '/metrics/none':
        return _json(start_response, {'request': mod_wsgi.request_metrics(),
                                      'process': mod_wsgi.process_metrics(),
                                      'server': mod_wsgi.server_metrics()})
    if path == '/metrics/start':
        mod_wsgi.start_recording_metrics()
        mod_wsgi.start_recording_metrics()
        return _json(start_response, 'recording')
    if path == '/metrics/request':
        return _json(start_response, mod_wsgi.request_metrics())
    if path == '/metrics/process':
        return _json(start_response, mod_wsgi.process_metrics())
    if path == '/not_found':
        return _json(start_response, 'nothing here', '404 Not Found')
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
