"""Builds sigprof's one C extension, sigprof._csigprof (the tick handler and the native capture).

Its sources are sigprof/_native_src/*.c, one file per job; sigprof.h there says who
owns what.  `optional=True`: where it cannot be compiled, the install still succeeds
and sigprof runs its pure-Python capture path instead (sigprof/_native.py says why).
Warnings that mean the build is wrong (an undeclared function: a CPython API this
Python lacks) are errors; the rest are warnings here and errors in the tests
(tests/test_native_build.py compiles with -Werror), so a newer compiler's new
warning does not silently cost a user the native path.
"""
import sys

if sys.version_info < (3, 11):
    sys.exit(f"sigprof needs Python 3.11 or newer (this is {sys.version.split()[0]}); "
             f"its C extension reads frames with PyFrame_GetLasti, new in 3.11")

from pathlib import Path  # noqa: E402

from setuptools import Extension, setup  # noqa: E402

NATIVE_SOURCES = sorted(str(p) for p in Path("sigprof/_native_src").glob("*.c"))
NATIVE_WARNINGS = ["-Wall", "-Wextra", "-Werror=implicit-function-declaration",
                   "-Werror=int-conversion", "-Werror=incompatible-pointer-types"]

setup(ext_modules=[Extension(
    "sigprof._csigprof", NATIVE_SOURCES, optional=True,
    depends=["sigprof/_native_src/sigprof.h"],
    # Hidden: the files' shared sp_* functions are not exported from the module.
    extra_compile_args=["-O2", "-fvisibility=hidden", *NATIVE_WARNINGS])])
