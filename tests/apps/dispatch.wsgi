# WSGIDispatchScript functions: each may override the request's group or callable, or return None.
def application_group(environ):
    if 'chosen' in environ['QUERY_STRING']:
        return 'chosen'
    if 'global' in environ['QUERY_STRING']:
        return '%{GLOBAL}'
    return None


def callable_object(environ):
    return 'alternate' if 'alt' in environ['QUERY_STRING'] else None


def process_group(environ):
    return 'elsewhere' if 'daemon' in environ['QUERY_STRING'] else None
