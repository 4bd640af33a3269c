/* The Capture type: one per profiled store, sampling whichever thread runs it.
 *
 * A capture follows the store to the thread that runs it and samples that
 * thread's ticks (bind).  Its epoch callback is a C function wasmtime calls
 * directly, with no Python on the path: when the tick count moved it has sample.c
 * write one record into the ring the Python side allocated.  The Python side's
 * hooks (guest entry and exit, host function entry and exit, ticks handed on from a
 * host function) are the methods below.
 *
 * The only Python the callback touches: in the main thread, PyErr_CheckSignals,
 * so Ctrl-C raised by a Python handler stops the guest (the exception is handed to
 * wasmtime-py through wasmtime._func.LAST_EXCEPTION, which re-raises it).
 *
 * Owns: Capture objects, the entry serials, and the sampling fields of the slot a
 * capture is bound to (ready, consumed, the interval clocks, in_host) -- with the
 * GIL, or in the epoch callback on the thread running the store.  Never touched by
 * the signal handler, which only reads in_host. */
#include "sigprof.h"

#include <structmember.h>
#include <unistd.h>

static uint64_t next_entry_serial;       /* process-wide: serials never repeat */

/* Ticks of the bound thread so far (manual and wakeup sources: their one counter). */
static inline uint64_t ticks_now(Capture *c)
{
    if (c->use_tick_record && c->every_thread)
        return sp_total_ticks();
    if (c->use_tick_record)
        return __atomic_load_n(&c->slot->count, __ATOMIC_ACQUIRE);
    return __atomic_load_n(c->ticks, __ATOMIC_ACQUIRE);
}

/* Follow the store to the calling thread.  A tick is charged once, to the thread
 * it interrupted, by whichever capture on that thread samples first: the
 * sampling clocks live in the thread's slot.  Returns 0 if the thread has no slot. */
static int bind(Capture *c)
{
    uint64_t tid = sp_thread_tid();
    if (c->slot && c->native_tid == tid)
        return 1;
    c->native_tid = tid;
    c->check_signals = tid == (uint64_t)getpid();
    c->slot = sp_slot_for(tid);
    if (c->slot == NULL) {
        c->unslotted++;
        return 0;
    }
    ThreadSlot *s = c->slot;
    sp_perf_cover(s, tid);
    int64_t cpu = thread_cpu_ns(c), wall = mono_ns(c);
    if (!s->ready) {
        s->consumed = ticks_now(c);
        s->cpu_prev = cpu;
        s->wall_prev = wall;
        s->pending_ns = 0;
        s->ready = 1;
    }
    /* Nothing from before this capture joined the thread is charged to it -- unless
     * a store-less profile charges the thread's Python time (hostticks.c): then a
     * tick in Python not yet charged goes to this store's entry sample. */
    if (sp_python_ticks_on() && c->use_tick_record && !c->every_thread) {
        c->bound_ticks = s->consumed;
        c->bound_cpu_ns = s->cpu_prev;
        c->bound_wall_ns = s->wall_prev;
        return 1;
    }
    c->bound_ticks = ticks_now(c);
    c->bound_cpu_ns = cpu;
    c->bound_wall_ns = wall;
    return 1;
}

/* The calling thread's slot if the capture is bound to it (and the slot was not
 * cleared and claimed again since), else NULL: for bookkeeping that must not bind. */
static inline ThreadSlot *own_slot(Capture *c)
{
    ThreadSlot *s = c->slot;
    if (s && c->native_tid == sp_thread_tid()
        && __atomic_load_n(&s->tid, __ATOMIC_ACQUIRE) == c->native_tid)
        return s;
    return NULL;
}

/* Ticks on the bound thread that no sample has charged yet. */
static inline int tick_due(Capture *c, uint64_t total)
{
    uint64_t consumed = c->slot->consumed;
    return total != (consumed > c->bound_ticks ? consumed : c->bound_ticks);
}

/* Hand a pending Python exception to wasmtime-py and build the error that stops the guest. */
static size_t raise_into_guest(Capture *c)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value != NULL && traceback != NULL)
        PyException_SetTraceback(value, traceback);
    if (value == NULL || PyObject_SetAttrString(c->last_exception_module, "LAST_EXCEPTION", value) < 0)
        PyErr_Clear();
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    return c->error_new("guest interrupted by a Python signal handler");
}

/* The application's own deadline passed: the trap wasmtime raises with no callback
 * (trap code INTERRUPT).  The callback's result is a wasmtime_error_t*; a wasm_trap_t
 * is the same repr(C) box around one wasmtime error (crates/c-api, 38-50), and
 * wasmtime hands a callback's error that is a Trap back to the caller as that trap. */
static size_t app_deadline_trap(Capture *c)
{
    return c->trap_new_code((uint8_t)c->interrupt_code);
}

size_t sp_epoch_callback(void *context, void *data, uint64_t *next_delta, uint8_t *update_kind)
{
    Capture *c = (Capture *)data;
    (void)context;
    *next_delta = c->deadline_delta;      /* never 0 in a profile: that re-enters at every check */
    *update_kind = 0;
    if (c->app_expired)
        return app_deadline_trap(c);
    if (!c->enabled || !bind(c))
        return 0;
    uint64_t total = ticks_now(c);
    if (tick_due(c, total))
        sp_record(c, ORIGIN_GUEST, total, WALK_CURRENT);
    /* No finalization check before taking the GIL: on the main thread this runs
     * inside a guest call Python made on this very thread, so the interpreter is
     * running here; other threads touch no Python. */
    if (!c->check_signals)
        return 0;
    size_t error = 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    if (PyErr_CheckSignals() < 0)
        error = raise_into_guest(c);
    PyGILState_Release(gil);
    return error;
}

/* The store holds a reference to its capture for as long as the callback is
 * registered: a store still running on another thread when its profile stops keeps
 * a live (disabled) capture, and wasmtime drops the reference when the callback is
 * replaced or the store is dropped -- on any thread, so the GIL is taken here.  At
 * interpreter shutdown the reference is left. */
void sp_release_capture(void *data)
{
    if (sp_python_finalizing())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_DECREF((PyObject *)data);
    PyGILState_Release(gil);
}

/* -- Python methods ---------------------------------------------------------------- */

static int Capture_init(Capture *c, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"ring", "header", "pcs", "capacity", "pc_capacity", "max_depth",
                            "stop_when_full", "vm_deadline_address", "context", "set_deadline",
                            "error_new", "last_exception_module", "python_frames",
                            "trap_new_code", "interrupt_code", NULL};
    long long header, pcs, vm, context, set_deadline, error_new, trap_new_code;
    PyObject *ring, *module;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OLLLLLpLLLLOpLi", names, &ring, &header, &pcs,
                                     &c->capacity, &c->pc_capacity, &c->max_depth,
                                     &c->stop_when_full, &vm, &context, &set_deadline,
                                     &error_new, &module, &c->python_frames, &trap_new_code,
                                     &c->interrupt_code))
        return -1;
    if (c->capacity < 1 || c->max_depth < 1 || c->pc_capacity < c->max_depth || !vm
        || !trap_new_code) {
        PyErr_SetString(PyExc_ValueError, "bad ring or store for a native capture");
        return -1;
    }
    Py_INCREF(ring);
    Py_XSETREF(c->ring, ring);
    Py_INCREF(module);
    Py_XSETREF(c->last_exception_module, module);
    c->header = (int64_t *)(uintptr_t)header;
    c->pcs = (uint64_t *)(uintptr_t)pcs;
    c->vm = (uint64_t *)(uintptr_t)vm;
    c->context = (void *)(uintptr_t)context;
    c->set_deadline = (set_deadline_fn)(uintptr_t)set_deadline;
    c->error_new = (error_new_fn)(uintptr_t)error_new;
    c->trap_new_code = (trap_new_code_fn)(uintptr_t)trap_new_code;
    c->app_expired = 0;
    c->slot = NULL;
    c->deadline_delta = 1;
    c->use_tick_record = 1;
    c->enabled = 0;
    c->memory_count = 0;
    return 0;
}

/* set_memories(memory_size_address, handle_size, handles): the linear memories each sample
 * measures, as wasmtime_memory_t structs packed in bytes. */
static PyObject *Capture_set_memories(Capture *c, PyObject *args)
{
    long long address;
    Py_ssize_t handle_size;
    Py_buffer handles;
    if (!PyArg_ParseTuple(args, "Lny*", &address, &handle_size, &handles))
        return NULL;
    Py_ssize_t count = handles.len / (Py_ssize_t)sizeof(MemoryHandle);
    if (handle_size != (Py_ssize_t)sizeof(MemoryHandle) || count > MAX_MEMORIES
        || handles.len % (Py_ssize_t)sizeof(MemoryHandle)) {
        PyBuffer_Release(&handles);
        PyErr_SetString(PyExc_ValueError, "bad memory handles");
        return NULL;
    }
    memcpy(c->memories, handles.buf, (size_t)handles.len);
    c->memory_count = (int)count;
    c->memory_size = (memory_size_fn)(uintptr_t)address;
    PyBuffer_Release(&handles);
    Py_RETURN_NONE;
}

static void Capture_dealloc(Capture *c)
{
    Py_XDECREF(c->ring);
    Py_XDECREF(c->last_exception_module);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* begin(tick_word_address=0, clock_address=0, t0_ns=0, every_thread=False): start
 * sampling, on the calling thread until the store runs elsewhere.  Ticks come from
 * the native handler's per-thread records -- or, with every_thread (the wall clock,
 * whose process-wide timer interrupts whichever thread the kernel picks), its count
 * of all ticks, each due once on every thread -- or from a counter at the given
 * address (manual and wakeup tick sources; no tick record then).  Clocks are real, or
 * two int64 words a test sets.  Sample times count from t0_ns (CLOCK_MONOTONIC; 0:
 * now), the profile's start. */
static PyObject *Capture_begin(Capture *c, PyObject *args)
{
    long long word = 0, clock = 0, t0 = 0;
    int every_thread = 0;
    if (!PyArg_ParseTuple(args, "|LLLp", &word, &clock, &t0, &every_thread))
        return NULL;
    c->every_thread = every_thread;
    if (word) {
        c->ticks = (const volatile uint64_t *)(uintptr_t)word;
        c->use_tick_record = 0;
    }
    c->fake_clock = (const volatile int64_t *)(uintptr_t)clock;
    sp_statm_open();
    c->page_size = sysconf(_SC_PAGESIZE);
    c->slot = NULL;
    bind(c);
    c->t0_ns = t0 ? t0 : mono_ns(c);
    c->cpu_start = thread_cpu_ns(c);
    c->enabled = 1;
    Py_RETURN_NONE;
}

/* Entry to a Python host function: the guest's frames are suspended below it; keep
 * them as an activation, and charge a tick that landed in the call path to it. */
static PyObject *Capture_host_enter(Capture *c, PyObject *origin)
{
    long long k = PyLong_AsLongLong(origin);
    if (k == -1 && PyErr_Occurred())
        return NULL;
    if (c->act_count < MAX_ACTIVATIONS) {
        Activation *a = &c->act[c->act_count];
        sp_current_activation(c, a);
        a->origin = k;
        a->serial = entry_serial(c);
        c->act_count++;
    } else {
        c->act_overflow++;
        c->activations_lost++;
    }
    if (c->enabled && bind(c)) {
        if (c->python_frames) {       /* only then is a tick in host code handed on */
            c->slot->host_since_ns = mono_ns(c);
            c->slot->in_host++;
        }
        uint64_t total = ticks_now(c);
        if (tick_due(c, total))
            sp_record(c, k, total, WALK_PUSHED);
    }
    Py_RETURN_NONE;
}

static PyObject *Capture_host_exit(Capture *c, PyObject *origin)
{
    long long k = PyLong_AsLongLong(origin);
    if (k == -1 && PyErr_Occurred())
        return NULL;
    ThreadSlot *s = own_slot(c);
    if (s && s->in_host > 0 && c->python_frames)
        s->in_host--;               /* also when sampling stopped during the call */
    if (c->enabled && bind(c)) {
        uint64_t total = ticks_now(c);
        if (tick_due(c, total)) {
            sp_record(c, k, total, WALK_PUSHED);
            /* The tick also bumped the epoch: move the deadline past it. */
            c->set_deadline(c->context, 1);
        }
    }
    if (c->act_overflow)
        c->act_overflow--;
    else if (c->act_count)
        c->act_count--;
    Py_RETURN_NONE;
}

/* The due tick of the bound thread, inside the host function the newest activation
 * called, as one sample with a new serial under which the caller keeps the Python
 * frames that host function is running (its callees); 0 if no tick is due.
 * `elsewhere`: the caller is the sampler thread (see host_tick_elsewhere). */
static uint64_t sample_in_host(Capture *c, int elsewhere)
{
    uint64_t total = ticks_now(c);
    if (!tick_due(c, total))
        return 0;
    uint64_t serial = __atomic_add_fetch(&next_entry_serial, 1, __ATOMIC_RELAXED);
    c->callee_serial = serial;
    c->recording_elsewhere = elsewhere;
    sp_record(c, c->act[c->act_count - 1].origin, total, WALK_PUSHED);
    c->recording_elsewhere = 0;
    c->callee_serial = 0;
    return serial;
}

/* host_tick() -> serial or 0: from the Python handler set_host_ticks names, inside a
 * host function on the main thread: sample the due tick now (sample_in_host). */
static PyObject *Capture_host_tick(Capture *c, PyObject *unused)
{
    (void)unused;
    uint64_t serial = 0;
    if (c->enabled && c->python_frames && c->act_count > 0 && !c->act_overflow && bind(c)
        && c->slot->in_host > 0)
        serial = sample_in_host(c, 0);
    return PyLong_FromUnsignedLongLong(serial);
}

/* host_tick_elsewhere(tid) -> serial or 0: from the sampler thread, holding the GIL
 * while thread `tid` -- the one this store is bound to -- waits for it inside a
 * Python host function (so it cannot touch this capture): sample its due tick, as
 * host_tick does on the main thread.  The interval ends at that thread's tick. */
static PyObject *Capture_host_tick_elsewhere(Capture *c, PyObject *arg)
{
    unsigned long long tid = PyLong_AsUnsignedLongLong(arg);
    if (tid == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    uint64_t serial = 0;
    ThreadSlot *s = c->slot;
    if (c->enabled && c->python_frames && c->use_tick_record && c->act_count > 0
        && !c->act_overflow && s && c->native_tid == tid
        && __atomic_load_n(&s->tid, __ATOMIC_ACQUIRE) == tid && s->in_host > 0)
        serial = sample_in_host(c, 1);
    return PyLong_FromUnsignedLongLong(serial);
}

/* Python calls the guest: a new entry (its serial names its Python frames). */
static PyObject *Capture_guest_enter(Capture *c, PyObject *unused)
{
    (void)unused;
    ThreadSlot *here = sp_slot_for(sp_thread_tid());
    if (here)
        here->guests++;               /* ticks here are no longer Python's */
    if (c->guest_depth > 0 && c->enabled && c->python_frames) {
        ThreadSlot *s = own_slot(c);
        if (s && s->in_host > 0)
            s->in_host--;             /* a host function re-enters: Python pauses */
    }
    if (c->guest_depth < MAX_ACTIVATIONS)
        c->entries[c->guest_depth] = __atomic_add_fetch(&next_entry_serial, 1, __ATOMIC_RELAXED);
    else
        c->activations_lost++;
    c->guest_depth++;
    if (c->guest_depth == 1 && c->enabled) {
        if (bind(c)) {
            uint64_t total = ticks_now(c);
            if (tick_due(c, total))
                sp_record(c, ORIGIN_OUTSIDE, total, WALK_ENTRY);
        }
        /* The application's deadline already passed: trap at the first epoch check. */
        c->set_deadline(c->context, c->app_expired ? 0 : 1);
    }
    Py_RETURN_NONE;
}

/* The guest call returned: if a sample needs its Python frames (the caller records
 * them now: they are the frames that made the call), (its serial, the serial of the
 * entry it was made from or 0); else None. */
static PyObject *Capture_guest_exit(Capture *c, PyObject *unused)
{
    (void)unused;
    uint64_t serial = 0, parent = 0;
    ThreadSlot *here = sp_slot_for(sp_thread_tid());
    if (here && here->guests > 0)
        here->guests--;
    if (c->guest_depth > 0) {
        long long level = c->guest_depth - 1;
        if (c->sampled_depth > level) {
            serial = entry_serial(c);
            c->sampled_depth = level;
        }
        c->guest_depth--;
        parent = entry_serial(c);
        if (c->guest_depth > 0 && c->enabled && c->python_frames) {
            ThreadSlot *s = own_slot(c);
            if (s)
                s->in_host++;         /* back in the host function that re-entered */
        }
    }
    if (!serial)
        Py_RETURN_NONE;
    return Py_BuildValue("KK", (unsigned long long)serial, (unsigned long long)parent);
}

/* finish() -> (unsampled cpu ns, unsampled wall ns, thread cpu ns, duration ns), for the
 * calling thread: sample a pending tick and stop. */
static PyObject *Capture_finish(Capture *c, PyObject *unused)
{
    (void)unused;
    int here = c->slot != NULL && c->native_tid == sp_thread_tid();
    if (c->enabled && here) {
        uint64_t total = ticks_now(c);
        if (tick_due(c, total))
            sp_record(c, ORIGIN_OUTSIDE, total, WALK_NONE);
    }
    c->enabled = 0;
    int64_t cpu_now = thread_cpu_ns(c), wall_now = mono_ns(c);
    long long cpu_left = 0, wall_left = 0;
    if (here) {
        ThreadSlot *s = c->slot;
        int64_t cpu_from = s->cpu_prev + s->pending_ns, wall_from = s->wall_prev + s->pending_ns;
        cpu_left = cpu_now - (cpu_from > c->bound_cpu_ns ? cpu_from : c->bound_cpu_ns);
        wall_left = wall_now - (wall_from > c->bound_wall_ns ? wall_from : c->bound_wall_ns);
    }
    return Py_BuildValue("LLLL", cpu_left > 0 ? cpu_left : 0LL, wall_left > 0 ? wall_left : 0LL,
                         (long long)(cpu_now - c->cpu_start), (long long)(wall_now - c->t0_ns));
}

/* release(): stop sampling for good and let the ring go (it has been read).  The
 * object itself may outlive its profile, as the epoch-callback data of a store
 * still running on another thread (which holds a reference to it). */
static PyObject *Capture_release(Capture *c, PyObject *unused)
{
    (void)unused;
    c->enabled = 0;
    c->header = NULL;
    c->pcs = NULL;
    Py_CLEAR(c->ring);
    Py_RETURN_NONE;
}

/* live_entries() -> the serials of the guest entries in progress, outermost first. */
static PyObject *Capture_live_entries(Capture *c, PyObject *unused)
{
    (void)unused;
    long long depth = c->guest_depth < MAX_ACTIVATIONS ? c->guest_depth : MAX_ACTIVATIONS;
    PyObject *out = PyList_New(depth > 0 ? depth : 0);
    if (out == NULL)
        return NULL;
    for (long long i = 0; i < depth; i++) {
        PyObject *serial = PyLong_FromUnsignedLongLong(c->entries[i]);
        if (serial == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, serial);
    }
    return out;
}

static PyObject *Capture_bound_here(Capture *c, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(c->slot != NULL && c->native_tid == sp_thread_tid());
}

static PyMethodDef Capture_methods[] = {
    {"release", (PyCFunction)Capture_release, METH_NOARGS, "stop for good; drop the ring"},
    {"live_entries", (PyCFunction)Capture_live_entries, METH_NOARGS,
     "serials of the guest entries in progress, outermost first"},
    {"bound_here", (PyCFunction)Capture_bound_here, METH_NOARGS,
     "is the calling thread the one the capture last sampled on?"},
    {"begin", (PyCFunction)Capture_begin, METH_VARARGS, "start sampling"},
    {"host_enter", (PyCFunction)Capture_host_enter, METH_O, "a Python host function starts"},
    {"host_exit", (PyCFunction)Capture_host_exit, METH_O, "a Python host function returns"},
    {"host_tick_elsewhere", (PyCFunction)Capture_host_tick_elsewhere, METH_O,
     "the sampler thread: sample the due tick of thread tid, inside a host function"},
    {"host_tick", (PyCFunction)Capture_host_tick, METH_NOARGS,
     "a tick landed in the running host function: sample it; serial for its callees or 0"},
    {"guest_enter", (PyCFunction)Capture_guest_enter, METH_NOARGS, "Python calls the guest"},
    {"guest_exit", (PyCFunction)Capture_guest_exit, METH_NOARGS,
     "the guest call returned: (serial, parent serial) if a sample needs its Python "
     "frames, else None"},
    {"finish", (PyCFunction)Capture_finish, METH_NOARGS, "sample a pending tick and stop"},
    {"set_memories", (PyCFunction)Capture_set_memories, METH_VARARGS,
     "the guest memories each sample measures"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Capture_members[] = {
    {"count", T_LONGLONG, offsetof(Capture, count), READONLY, "samples written"},
    {"pc_end", T_LONGLONG, offsetof(Capture, pc_end), READONLY, "PC stream position"},
    {"refused", T_LONGLONG, offsetof(Capture, refused), READONLY, "samples refused (ring full)"},
    {"shared", T_LONGLONG, offsetof(Capture, shared), READONLY,
     "samples stored as a reference to the previous identical stack"},
    {"overhead_ns", T_LONGLONG, offsetof(Capture, overhead_ns), READONLY, "time spent sampling"},
    {"unslotted", T_LONGLONG, offsetof(Capture, unslotted), READONLY,
     "epoch checks on a thread the thread table had no room for"},
    {"activations_lost", T_LONGLONG, offsetof(Capture, activations_lost), READONLY,
     "guest entries and host calls nested deeper than MAX_ACTIVATIONS"},
    {"enabled", T_INT, offsetof(Capture, enabled), 0, "sampling on"},
    {"deadline_delta", T_ULONGLONG, offsetof(Capture, deadline_delta), 0,
     "epoch deadline delta the callback sets (1; benchmarks use 0)"},
    {"app_expired", T_INT, offsetof(Capture, app_expired), 0,
     "the application's own epoch deadline passed: the callback traps"},
    {"guest_depth", T_LONGLONG, offsetof(Capture, guest_depth), READONLY, "nested guest calls"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject sp_CaptureType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sigprof._csigprof.Capture",
    .tp_basicsize = sizeof(Capture),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Native sampling state for one store (see the module docstring).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Capture_init,
    .tp_dealloc = (destructor)Capture_dealloc,
    .tp_methods = Capture_methods,
    .tp_members = Capture_members,
};

/* store_reference(capture) -> its address, with a new reference the store will own
 * (released by RELEASE_CAPTURE, the callback's finalizer). */
PyObject *sp_py_store_reference(PyObject *self, PyObject *obj)
{
    (void)self;
    if (!PyObject_TypeCheck(obj, &sp_CaptureType)) {
        PyErr_SetString(PyExc_TypeError, "expected a Capture");
        return NULL;
    }
    Py_INCREF(obj);
    return PyLong_FromVoidPtr(obj);
}
