# Lists the paths of the UNIX sockets this process holds open (daemon mode: which groups' sockets it could
# accept connections from).
import json
import os


def _held():
    inodes = set()
    for fd in os.listdir('/proc/self/fd'):
        try:
            target = os.readlink('/proc/self/fd/' + fd)
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(target[len('socket:['):-1])
    paths = []
    with open('/proc/net/unix') as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) >= 8 and fields[6] in inodes:
                paths.append(fields[7])
    return sorted(set(p for p in paths if p.endswith('.sock')))


def application(environ, start_response):
    body = json.dumps({'group': environ['mod_wsgi.process_group'], 'sockets': _held()}).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]
