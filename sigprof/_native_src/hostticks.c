/* Ticks that land in a Python host function go to Python, which reads the frames
 * the host function is running.
 *
 * On the main thread: to the Python-level handler for `host_tick_signum`
 * (PyErr_SetInterruptEx, async-signal-safe), which runs at the next bytecode
 * boundary, inside the host function.  Elsewhere CPython has no such hook: the
 * thread's id goes down `host_tick_fd` (a non-blocking pipe; write is
 * async-signal-safe) to a sampler thread, which reads the thread's frames once it
 * holds the GIL (the main thread's too, when the profile started elsewhere and no
 * Python signal handler could be set).  0 / -1: off.
 *
 * Owns: that signal, that descriptor and the main thread's id; Python (holding the
 * GIL) stores them, the signal handler loads them.  The sampling itself is a
 * Capture method (capture.c: host_tick, host_tick_elsewhere). */
#include "sigprof.h"

#include <unistd.h>

static int host_tick_signum;
static int host_tick_fd = -1;
static uint64_t main_tid;
static volatile uint64_t host_ticks_unsent;   /* ticks the full pipe refused */
/* The sampler thread gets the GIL a switch interval (5 ms) after asking, at best:
 * a host call shorter than that has returned by then, and waking it for nothing
 * costs the thread GIL hand-offs.  So only ticks at least this far into a host call
 * go down the pipe. */
#define HOST_TICK_AFTER_NS 2000000

void sp_forward_host_tick(const ThreadSlot *s, uint64_t tid)
{
    int signum = __atomic_load_n(&host_tick_signum, __ATOMIC_ACQUIRE);
    int fd = __atomic_load_n(&host_tick_fd, __ATOMIC_ACQUIRE);
    if (signum && tid == main_tid)
        PyErr_SetInterruptEx(signum);
    else if (fd >= 0 && s->wall_ns - s->host_since_ns >= HOST_TICK_AFTER_NS
             && write(fd, &tid, sizeof tid) < 0) {
        /* full (the sampler is behind): this tick goes to the host function */
        __atomic_add_fetch(&host_ticks_unsent, 1, __ATOMIC_RELAXED);
    }
}

/* set_host_ticks(signum, fd): hand ticks in host calls to Python -- on the main
 * thread to the Python handler of `signum` (0: none, the pipe then), elsewhere down
 * the pipe `fd` (-1: none). */
PyObject *sp_py_set_host_ticks(PyObject *self, PyObject *args)
{
    int signum, fd;
    (void)self;
    if (!PyArg_ParseTuple(args, "ii", &signum, &fd))
        return NULL;
    main_tid = (uint64_t)getpid();
    __atomic_store_n(&host_tick_fd, fd, __ATOMIC_RELEASE);
    __atomic_store_n(&host_tick_signum, signum, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* host_ticks_unsent() -> ticks in host calls the pipe had no room for, ever */
PyObject *sp_py_host_ticks_unsent(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromUnsignedLongLong(
        (unsigned long long)__atomic_load_n(&host_ticks_unsent, __ATOMIC_ACQUIRE));
}
