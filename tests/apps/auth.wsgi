# WSGIAccessScript, WSGIAuthUserScript and WSGIAuthGroupScript functions, as mod_wsgi's docs define them.
USERS = {'alice': 'secret', 'dave': 'pass'}
GROUPS = {'alice': ['admins', 'staff'], 'dave': ['staff']}


def allow_access(environ, host):
    assert host == environ['REMOTE_ADDR']
    return environ.get('HTTP_X_LET_ME_IN') == 'yes'


def check_password(environ, user, password):
    if user == 'carol':
        return 'carol-renamed'
    if user not in USERS:
        return None
    return USERS[user] == password


def groups_for_user(environ, user):
    return GROUPS.get(user, [])


def get_realm_hash(environ, user, realm):
    import hashlib
    if user not in USERS:
        return None
    return hashlib.md5(('%s:%s:%s' % (user, realm, USERS[user])).encode()).hexdigest()
