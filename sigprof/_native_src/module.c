/* The module sigprof._csigprof: its functions, constants and the Capture type.
 *
 * Owns no state.  The functions live in the file of their job (see sigprof.h); the
 * docstrings here are what Python shows.  Types for the checker: _csigprof.pyi. */
#include "sigprof.h"

#include <pthread.h>

/* ring_layout() -> {name: value}: the ring layout (sigprof.h's H_* and the record
 * constants) this build writes, so that _ring.py, which owns it, can check that
 * the two agree before the native capture writes a single record. */
static PyObject *py_ring_layout(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return Py_BuildValue(
        "{sisisisisisisisisisisisisisisisisisisisisisKsK}",
        "H_TIME", H_TIME, "H_CPU", H_CPU, "H_WALL", H_WALL, "H_PC_START", H_PC_START,
        "H_PC_COUNT", H_PC_COUNT, "H_ORIGIN", H_ORIGIN, "H_TICKS", H_TICKS,
        "H_TICK_PC", H_TICK_PC, "H_FLAGS", H_FLAGS, "H_HASH", H_HASH, "H_RSS", H_RSS,
        "H_MEMORY", H_MEMORY, "H_TID", H_TID, "H_ENTRY", H_ENTRY, "H_CALLEE", H_CALLEE,
        "HEADER_FIELDS", HEADER_FIELDS,
        "HEADER_WORD_BYTES", (int)sizeof(int64_t), "PC_WORD_BYTES", (int)sizeof(uint64_t),
        "FLAG_DEPTH_LIMITED", FLAG_DEPTH_LIMITED,
        "ORIGIN_GUEST", ORIGIN_GUEST, "ORIGIN_OUTSIDE", ORIGIN_OUTSIDE,
        "MARK_ENTRY", (unsigned long long)MARK_ENTRY, "MARK_HOST", (unsigned long long)MARK_HOST);
}

static PyMethodDef module_methods[] = {
    {"python_stack", sp_py_python_stack, METH_VARARGS,
     "python_stack(frame, stop_code) -> ((code, lasti, ...), reached stop_code)"},
    {"thread_python_stack", sp_py_thread_python_stack, METH_VARARGS,
     "thread_python_stack(native_tid, stop_code) -> python_stack's, of that thread, or None"},
    {"install", sp_py_install, METH_VARARGS,
     "install(signum, increment_epoch_address, on_alt_stack)"},
    {"set_store_layout", sp_py_set_store_layout, METH_VARARGS,
     "set_store_layout(exit_trampoline_fp_word, exit_pc_word, entry_fp_word)"},
    {"add_engine", sp_py_add_engine, METH_O, "bump this engine's epoch at every tick"},
    {"remove_engine", sp_py_remove_engine, METH_O, "stop bumping this engine's epoch"},
    {"reset_threads", sp_py_reset_threads, METH_NOARGS, "forget every thread's tick record"},
    {"set_host_ticks", sp_py_set_host_ticks, METH_VARARGS,
     "set_host_ticks(signum, fd): ticks in host calls go to Python (see the source)"},
    {"perf_start", sp_py_perf_start, METH_VARARGS,
     "perf_start(period_ns, signum): per-thread task-clock events from now on"},
    {"perf_stop", sp_py_perf_stop, METH_VARARGS,
     "close every thread's event; returns threads whose event could not be opened"},
    {"uninstall", sp_py_uninstall, METH_VARARGS, "uninstall(restore=True)"},
    {"handler_is_ours", sp_py_handler_is_ours, METH_NOARGS, "is our handler still installed?"},
    {"tick_counts", sp_py_tick_counts, METH_NOARGS, "(ticks so far, ticks lost)"},
    {"set_python_ticks", sp_py_set_python_ticks, METH_O,
     "set_python_ticks(on): ticks outside guest calls go to Python too (see hostticks.c)"},
    {"python_tick", sp_py_python_tick, METH_O,
     "python_tick(tid) -> (cpu_ns, wall_ns, ticks, tick_wall_ns) or None (see hostticks.c)"},
    {"host_ticks_unsent", sp_py_host_ticks_unsent, METH_NOARGS,
     "ticks in host calls the sampler pipe had no room for, ever"},
    {"ring_layout", py_ring_layout, METH_NOARGS,
     "the ring layout this build writes: {name: value} (checked by sigprof._ring)"},
    {"last_tick", sp_py_last_tick, METH_NOARGS,
     "the calling thread's latest tick: (count, cpu_ns, wall_ns, pc, tid) or None"},
    {"disposition", sp_py_disposition, METH_VARARGS, "raw handler address for a signal"},
    {"store_reference", sp_py_store_reference, METH_O,
     "a new reference to a Capture, as the address the store's callback holds"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "sigprof._csigprof", "sigprof's native tick handler and capture.", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__csigprof(void)
{
    if (PyType_Ready(&sp_CaptureType) < 0)
        return NULL;
    if (pthread_atfork(NULL, NULL, sp_forget_cached_tid) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "pthread_atfork failed");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    Py_INCREF(&sp_CaptureType);
    if (PyModule_AddObject(m, "Capture", (PyObject *)&sp_CaptureType) < 0
        || PyModule_AddObject(m, "EPOCH_CALLBACK", PyLong_FromVoidPtr((void *)(uintptr_t)sp_epoch_callback)) < 0
        || PyModule_AddObject(m, "RELEASE_CAPTURE", PyLong_FromVoidPtr((void *)(uintptr_t)sp_release_capture)) < 0
        || PyModule_AddIntConstant(m, "HEADER_FIELDS", HEADER_FIELDS) < 0
        || PyModule_AddIntConstant(m, "MAX_ACTIVATIONS", MAX_ACTIVATIONS) < 0
        || PyModule_AddObject(m, "MARK_ENTRY", PyLong_FromUnsignedLongLong(MARK_ENTRY)) < 0
        || PyModule_AddObject(m, "MARK_HOST", PyLong_FromUnsignedLongLong(MARK_HOST)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
