"""Builds sigprof's one C extension (the tick handler and the native capture).

`optional=True`: where it cannot be compiled, the install still succeeds and
sigprof runs its pure-Python capture path instead (see sigprof/_native.py).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("sigprof._csigprof", ["sigprof/_csigprof.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"])])
