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

/* -- Python time ---------------------------------------------------------------------
 * A store-less profile covers the whole program, so a tick on a thread with no guest
 * call in progress (Python between guest calls, on any store, or after the last) is
 * handed on like a host tick, and python_tick charges it to the thread's Python
 * frames.  Owns the switch; the slot fields python_tick writes are the captures'
 * (capture.c), written here only while the slot's thread runs no guest and the
 * caller holds the GIL -- so no capture on that thread can be sampling. */
static int python_ticks;

int sp_python_ticks_on(void)
{
    return __atomic_load_n(&python_ticks, __ATOMIC_ACQUIRE);
}

/* set_python_ticks(on) */
PyObject *sp_py_set_python_ticks(PyObject *self, PyObject *arg)
{
    (void)self;
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    __atomic_store_n(&python_ticks, on, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* python_tick(tid) -> (cpu_ns, wall_ns, ticks, tick_wall_ns) or None: charge thread
 * `tid`'s ticks not yet charged, if it has no guest call in progress: the interval
 * from where its last sample ended (cpu_ns, wall_ns -1: it has none; the caller
 * weighs the tick by the interval) to its latest tick (at CLOCK_MONOTONIC
 * tick_wall_ns).  The caller holds the GIL and reads the thread's Python frames. */
PyObject *sp_py_python_tick(PyObject *self, PyObject *arg)
{
    (void)self;
    unsigned long long tid = PyLong_AsUnsignedLongLong(arg);
    if (tid == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    ThreadSlot *s = sp_slot_for(tid);
    TickRecord t;
    if (s == NULL || s->guests > 0 || !sp_read_tick(s, &t) || t.count == 0
        || (s->ready && t.count <= s->consumed))
        Py_RETURN_NONE;
    long long cpu_ns = -1, wall_ns = -1;
    unsigned long long ticks = 1;
    if (s->ready) {
        cpu_ns = t.cpu_ns - (s->cpu_prev + s->pending_ns);
        wall_ns = t.wall_ns - (s->wall_prev + s->pending_ns);
        ticks = t.count - s->consumed;
    }
    s->consumed = t.count;
    s->seen = t.count;
    s->cpu_prev = t.cpu_ns;
    s->wall_prev = t.wall_ns;
    s->pending_ns = 0;
    s->ready = 1;
    return Py_BuildValue("LLKL", cpu_ns > 0 || cpu_ns == -1 ? cpu_ns : 0LL,
                         wall_ns > 0 || wall_ns == -1 ? wall_ns : 0LL, ticks,
                         (long long)t.wall_ns);
}
