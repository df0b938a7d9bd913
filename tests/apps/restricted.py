# What WSGIRestrictStdout, WSGIRestrictStdin and WSGIRestrictSignal do to an app.
import json
import signal
import sys


def application(environ, start_response):
    report = {}
    try:
        print('to stdout')
        report['stdout'] = 'allowed'
    except OSError as err:
        report['stdout'] = str(err)
    try:
        sys.stdin.read()
        report['stdin'] = 'allowed'
    except OSError as err:
        report['stdin'] = str(err)
    previous = signal.getsignal(signal.SIGUSR2)
    try:
        signal.signal(signal.SIGUSR2, lambda *args: None)
        report['signal'] = 'installed' if signal.getsignal(signal.SIGUSR2) is not previous else 'ignored'
    except ValueError as err:
        # Unrestricted, Python itself refuses: requests run outside the main thread.
        report['signal'] = str(err)
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps(report).encode()]
