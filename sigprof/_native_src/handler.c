/* Installing the tick handler, and the engines whose epoch each tick bumps.
 *
 * Owns: the action the handler replaced (restored at uninstall), the signal it is
 * installed for, the address of wasmtime_engine_increment_epoch, and the engine
 * list.  Python (holding the GIL) writes them; the handler only loads the list. */
#include "sigprof.h"

#include <string.h>

#define MAX_ENGINES 256
typedef void (*increment_epoch_fn)(void *engine);

static increment_epoch_fn increment_epoch;
static void *volatile engines[MAX_ENGINES];   /* NULL: a free place */
static volatile int engine_high;              /* places in use are below this */
static struct sigaction previous_action;
static int installed_signum;

void sp_bump_engines(void)
{
    int n = __atomic_load_n(&engine_high, __ATOMIC_ACQUIRE);
    for (int i = 0; i < n; i++) {
        void *engine = __atomic_load_n(&engines[i], __ATOMIC_ACQUIRE);
        if (engine)
            increment_epoch(engine);
    }
}

PyObject *sp_py_install(PyObject *self, PyObject *args)
{
    int signum;
    long long increment_address;
    int on_alt_stack;
    (void)self;
    if (!PyArg_ParseTuple(args, "iLp", &signum, &increment_address, &on_alt_stack))
        return NULL;
    if (installed_signum) {
        PyErr_SetString(PyExc_RuntimeError, "the native tick handler is already installed");
        return NULL;
    }
    increment_epoch = (increment_epoch_fn)(uintptr_t)increment_address;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = sp_on_tick;
    /* On wasmtime's alternate stack where it outlives the thread's signals
     * (_wasmtime.Release.tick_handler_on_alt_stack): a tick in wasm near the stack
     * limit then has room to run. */
    action.sa_flags = SA_SIGINFO | SA_RESTART | (on_alt_stack ? SA_ONSTACK : 0);
    sigemptyset(&action.sa_mask);
    if (sigaction(signum, &action, &previous_action) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    installed_signum = signum;
    Py_RETURN_NONE;
}

/* add_engine(address) / remove_engine(address): the engines whose epoch each tick
 * bumps.  The caller keeps a removed engine alive while the handler is installed
 * (a handler already running may still hold its address). */
PyObject *sp_py_add_engine(PyObject *self, PyObject *arg)
{
    (void)self;
    void *engine = PyLong_AsVoidPtr(arg);
    if (engine == NULL)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "null engine");
    int high = engine_high;
    for (int i = 0; i < high; i++) {
        if (engines[i] == NULL) {
            __atomic_store_n(&engines[i], engine, __ATOMIC_RELEASE);
            Py_RETURN_NONE;
        }
    }
    if (high >= MAX_ENGINES)
        return PyErr_Format(PyExc_RuntimeError, "more than %d profiled engines", MAX_ENGINES);
    __atomic_store_n(&engines[high], engine, __ATOMIC_RELEASE);
    __atomic_store_n(&engine_high, high + 1, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

PyObject *sp_py_remove_engine(PyObject *self, PyObject *arg)
{
    (void)self;
    void *engine = PyLong_AsVoidPtr(arg);
    if (engine == NULL && PyErr_Occurred())
        return NULL;
    for (int i = 0; i < engine_high; i++) {
        if (engines[i] == engine) {
            __atomic_store_n(&engines[i], NULL, __ATOMIC_RELEASE);
            break;
        }
    }
    Py_RETURN_NONE;
}

PyObject *sp_py_handler_is_ours(PyObject *self, PyObject *unused)
{
    struct sigaction now;
    (void)self;
    (void)unused;
    if (!installed_signum || sigaction(installed_signum, NULL, &now) != 0)
        Py_RETURN_FALSE;
    return PyBool_FromLong((now.sa_flags & SA_SIGINFO) && now.sa_sigaction == sp_on_tick);
}

/* Restore the action saved at install (restore=True) or just forget it (someone
 * else's handler replaced ours and stays). */
PyObject *sp_py_uninstall(PyObject *self, PyObject *args)
{
    int restore = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "|p", &restore))
        return NULL;
    if (installed_signum && restore && sigaction(installed_signum, &previous_action, NULL) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    installed_signum = 0;
    for (int i = 0; i < MAX_ENGINES; i++)
        engines[i] = NULL;
    __atomic_store_n(&engine_high, 0, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* disposition(signum) -> the raw address of the signal's handler. */
PyObject *sp_py_disposition(PyObject *self, PyObject *args)
{
    int signum;
    struct sigaction now;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &signum))
        return NULL;
    if (sigaction(signum, NULL, &now) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (now.sa_flags & SA_SIGINFO)
        return PyLong_FromVoidPtr((void *)(uintptr_t)now.sa_sigaction);
    return PyLong_FromVoidPtr((void *)(uintptr_t)now.sa_handler);
}
