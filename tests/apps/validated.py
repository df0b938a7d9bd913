"""The suite app wrapped in wsgiref's validator, with every warning turned into an error so any PEP 3333
violation by the server fails the request."""

import os
import sys
import warnings
from wsgiref.validate import validator

sys.path.insert(0, os.path.dirname(__file__))
warnings.simplefilter('error')

import suite  # noqa: E402

application = validator(suite.application)
