"""The benchmark workloads, one WSGI app for every server: the seed's hello (bytes body), a 10 KB GET, and a
100 KB POST echoed back by iterating wsgi.input in chunks."""

HELLO = b'Hello World!'
TEN_KB = b'x' * 10240


def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/10k':
        start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                                  ('Content-Length', str(len(TEN_KB)))])
        return [TEN_KB]
    if path == '/echo':
        stream = environ['wsgi.input']
        length = int(environ.get('CONTENT_LENGTH') or 0)
        chunks = []
        while length > 0:
            chunk = stream.read(min(16384, length))
            if not chunk:
                break
            length -= len(chunk)
            chunks.append(chunk)
        body = b''.join(chunks)
        start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                                  ('Content-Length', str(len(body)))])
        return [body]
    status = '200 OK'
    output = HELLO
    response_headers = [('Content-type', 'text/plain'),
                        ('Content-Length', str(len(output)))]
    start_response(status, response_headers)
    return [output]
