"""The test suite's Django site (tests/apps/django_site) as an importable module, for servers that take
module:callable."""

import os
import sys

SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'apps', 'django_site')
sys.path.insert(0, os.path.abspath(SITE))
os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'settings')

import django  # noqa: E402

django.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402

application = WSGIHandler()
