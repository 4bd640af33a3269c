"""Settings the capture layer and the command line share, in a module that imports
nothing: the CLI builds its parser (and runs ``convert``, ``report``, ``view`` and
``diff``) without importing wasmtime, which only ``record`` needs."""

DEFAULT_CAPACITY = 20_000     # samples in each store's ring
DEFAULT_MAX_DEPTH = 65536     # guest frames walked per sample: whole stacks by default
STUB_MODES = ("trap", "zero")  # what a stood-in import does: trap naming itself, or return 0s
TRAP_EXIT_CODE = 134          # what `wasmtime run` uses for a trap on Unix (128 + SIGABRT)
INTERRUPT_EXIT_CODE = 130     # 128 + SIGINT
CONTINUOUS_PERIOD_S = 60.0    # what each file of continuous profiling covers, by default
CONTINUOUS_MAX_FILES = 60     # and how many it keeps: an hour at that period
# The wasmtime-py releases the capture layer knows (its facts per release are in
# _wasmtime.RELEASE); pyproject.toml's dependency says the same.
WASMTIME_MAJORS = range(38, 51)
WASMTIME_REQUIREMENT = f"wasmtime>={WASMTIME_MAJORS[0]},<{WASMTIME_MAJORS[-1] + 1}"
# Host calls and guest calls at least this long become timeline markers in the
# Firefox output, up to this many per profile (the rest are counted, not kept).
MARKER_MIN_NS = 50_000
MARKER_CAPACITY = 20_000
