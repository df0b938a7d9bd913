"""Starts bjoern, which has no command line of its own: bjoern_serve.py MODULE:CALLABLE HOST PORT."""

import importlib
import sys

import bjoern

module, callable_name = sys.argv[1].split(':')
app = getattr(importlib.import_module(module), callable_name)
bjoern.run(app, sys.argv[2], int(sys.argv[3]))
