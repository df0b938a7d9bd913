import os, sys
# may be required :)
sys.path.append(os.path.dirname(__file__))
os.environ['DJANGO_SETTINGS_MODULE'] = 'settings'

import django
django.setup()
import django.core.handlers.wsgi

application = django.core.handlers.wsgi.WSGIHandler()
