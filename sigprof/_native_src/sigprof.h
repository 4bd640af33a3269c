/* sigprof's native hot path (the extension sigprof._csigprof): what its files share.
 *
 * Why C.  A Python-level signal handler never runs while wasm runs, and a relay
 * thread needs the GIL before it can bump the epoch, so the tick handler is C: per
 * tick it stores, in the interrupted thread's own record, the PC, that thread's CPU
 * clock and CLOCK_MONOTONIC, then calls wasmtime_engine_increment_epoch (one atomic
 * add) for every profiled engine.  The signal comes from an interval timer or from
 * the thread's own perf task-clock event (finer than the kernel tick).  One
 * `Capture` per profiled store has an epoch callback wasmtime calls directly, with no
 * Python on the path: when the tick count moved it walks the guest's frames by frame
 * pointer from wasmtime's VMStoreContext and writes one record into the ring the
 * Python side allocated (sigprof/_ring.py owns that layout; H_* below repeat it,
 * and module.c's ring_layout() reports them for _ring.check_layout to compare).
 *
 * One file per job, and who owns what:
 *
 *   file         job                                   state it owns (the only writer)
 *   ticks.c      thread table, the signal handler      the ThreadSlot table (claims, the
 *                (on_tick), reading a tick back         handler's tick fields), total/lost
 *                                                       tick counts, the cached thread id
 *   handler.c    installing the handler; the engines   the saved sigaction, the installed
 *                each tick bumps                        signal, the engine list, the
 *                                                       increment_epoch address
 *   perf.c       per-thread perf task-clock events     perf period/signal/failures, the
 *                                                       open-event count and its lock,
 *                                                       ThreadSlot.perf_fd
 *   hostticks.c  where ticks in Python host calls go   the Python handler's signal, the
 *                (main thread: a Python signal; else    sampler pipe's fd, the main
 *                a pipe to the sampler thread)          thread's id
 *   capture.c    the Capture type: binding to a        Capture objects; the sampling fields
 *                thread, the epoch callback, the        of the ThreadSlot it is bound to
 *                Python-facing methods                  (ready .. host_since_ns); entry serials
 *   sample.c     one sample: the frame walk and the    /proc/self/statm's descriptor; the
 *                ring record                            ring words a record covers
 *   pyframes.c   python_stack, thread_python_stack:    nothing
 *                the Python frames that made a guest
 *                call, of this thread or another
 *   module.c     the module definition (PyInit)        nothing
 *
 * State is file-static; other files reach it through the functions declared below.
 * The exceptions are the structs whose fields say their owner: ThreadSlot (a slot's
 * tick fields are the handler's, its sampling fields the captures' on that thread)
 * and Capture (capture.c and sample.c, always under the GIL or on the store's thread).
 *
 * The signal handler (sp_on_tick, in ticks.c) and everything it calls is marked
 * ASYNC-SIGNAL-SAFE below: it may interrupt any code on any thread, holding no lock
 * and no GIL.  It touches only: its own thread's slot (claiming it with a CAS), the
 * two tick counters, the engine list (atomic loads), the host-tick signal/fd/main
 * thread id (atomic loads), and makes only async-signal-safe calls (clock_gettime,
 * syscall(gettid), write, PyErr_SetInterruptEx).  No allocation, no locks, no
 * thread-local storage (a module's TLS may be allocated on first use), and errno is
 * saved and restored.
 *
 * Requires CPython 3.11 or newer (PyFrame_GetLasti, PyFrame_GetBack and a public
 * PyFrame_Check in Python.h).  `_GNU_SOURCE` comes from pyconfig.h, which Python.h
 * includes first: every file includes this header before any system header.
 */
#ifndef SIGPROF_NATIVE_H
#define SIGPROF_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX < 0x030B0000
#error "sigprof's C extension needs CPython 3.11 or newer (it reads frames with PyFrame_GetLasti, new in 3.11)"
#endif

#include <signal.h>
#include <stdint.h>
#include <time.h>

static inline int64_t ns_of(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* Is the interpreter shutting down?  Then no Python object may be touched from a
 * thread wasmtime calls us on.  (Py_IsFinalizing became public in 3.13.) */
static inline int sp_python_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing() || !Py_IsInitialized();
#else
    return _Py_IsFinalizing() || !Py_IsInitialized();
#endif
}

/* ---- ticks.c: the per-thread tick records and the signal handler ------------------- */

/* A process-wide CPU timer's signal is delivered to the thread that was running
 * when the timer expired, so the handler charges each tick to the interrupted
 * thread: a fixed open-addressing table keyed by kernel thread id, claimed with a
 * compare-and-swap (async-signal-safe, no allocation).  The handler writes only
 * its own thread's tick fields, under a seqlock (`begin` before, `count` after);
 * the captures running on that thread own the sampling fields.  A thread that
 * finds the table full has its ticks counted as lost. */
#define THREAD_SLOTS 4096

typedef struct {
    volatile uint64_t tid;        /* 0: free; claimed by sp_slot_for (ticks.c) */
    /* written by the tick handler, on this thread */
    volatile uint64_t count;      /* ticks so far (seqlock end) */
    volatile uint64_t begin;      /* seqlock begin */
    volatile int64_t cpu_ns;      /* this thread's CPU clock at the tick */
    volatile int64_t wall_ns;     /* CLOCK_MONOTONIC at the tick */
    volatile uint64_t pc;         /* interrupted instruction pointer */
    /* written by captures on this thread (capture.c, sample.c), never by the handler */
    int ready;                    /* the fields below were initialised */
    uint64_t consumed;            /* ticks already charged to a sample */
    int64_t cpu_prev, wall_prev;  /* where the last sample's interval ended */
    int64_t pending_ns;           /* profiler time to leave out of the next interval */
    int perf_fd;                  /* perf.c's, under its lock: this thread's perf event + 1
                                     (0: none, -1: refused) */
    uint64_t seen;                /* the own tick whose record the last sample used */
    int in_host;                  /* Python host calls in progress (read by the handler) */
    int64_t host_since_ns;        /* CLOCK_MONOTONIC when the newest host call began */
    int guests;                   /* guest calls in progress on this thread, any store (read
                                     by the handler: with none, a tick is Python's) */
} ThreadSlot;

typedef struct {                  /* a consistent copy of a slot's latest tick */
    uint64_t count;
    int64_t cpu_ns, wall_ns;
    uint64_t pc;
} TickRecord;

/* The slot of thread `tid`, claimed if it has none; NULL when the table is full.
 * ASYNC-SIGNAL-SAFE. */
ThreadSlot *sp_slot_for(uint64_t tid);
/* The table's i-th slot, 0 <= i < THREAD_SLOTS (perf.c's sweeps). */
ThreadSlot *sp_slot_at(int i);
/* A consistent copy of a slot's latest tick; 0 if a handler kept interrupting the read. */
int sp_read_tick(const ThreadSlot *s, TickRecord *out);
/* Ticks so far in every thread. */
uint64_t sp_total_ticks(void);
/* The calling thread's kernel id: a system call.  ASYNC-SIGNAL-SAFE. */
uint64_t sp_current_tid(void);
/* The same, cached per thread (captures compare it at every epoch callback).  Not
 * for the signal handler. */
uint64_t sp_thread_tid(void);
/* pthread_atfork child hook: a forked child's one thread has a new id. */
void sp_forget_cached_tid(void);
/* The handler (a SA_SIGINFO action).  ASYNC-SIGNAL-SAFE. */
void sp_on_tick(int signum, siginfo_t *info, void *ucv);

PyObject *sp_py_reset_threads(PyObject *self, PyObject *unused);
PyObject *sp_py_tick_counts(PyObject *self, PyObject *unused);
PyObject *sp_py_last_tick(PyObject *self, PyObject *unused);

/* ---- handler.c: installing the handler, and the engines each tick bumps ------------ */

/* Bump the epoch of every registered engine.  ASYNC-SIGNAL-SAFE. */
void sp_bump_engines(void);

PyObject *sp_py_install(PyObject *self, PyObject *args);
PyObject *sp_py_uninstall(PyObject *self, PyObject *args);
PyObject *sp_py_add_engine(PyObject *self, PyObject *arg);
PyObject *sp_py_remove_engine(PyObject *self, PyObject *arg);
PyObject *sp_py_handler_is_ours(PyObject *self, PyObject *unused);
PyObject *sp_py_disposition(PyObject *self, PyObject *args);

/* ---- perf.c: per-thread perf task-clock events ------------------------------------- */

/* The calling thread's slot gets its event if perf events are on and it has none. */
void sp_perf_cover(ThreadSlot *s, uint64_t tid);
/* Are perf events on (some may be open)? */
int sp_perf_active(void);

PyObject *sp_py_perf_start(PyObject *self, PyObject *args);
PyObject *sp_py_perf_stop(PyObject *self, PyObject *args);

/* ---- hostticks.c: ticks that land in a Python host function ------------------------- */

/* Hand the tick that just landed on thread `tid` (slot `s`, inside a Python host
 * call) on to Python.  ASYNC-SIGNAL-SAFE. */
void sp_forward_host_tick(const ThreadSlot *s, uint64_t tid);

PyObject *sp_py_set_host_ticks(PyObject *self, PyObject *args);
PyObject *sp_py_host_ticks_unsent(PyObject *self, PyObject *unused);
/* Python time: a store-less profile asks for ticks on threads with no guest call in
 * progress too (they go where host ticks go), and charges each to the thread's Python
 * frames (python_tick).  sp_python_ticks_on: asked for.  ASYNC-SIGNAL-SAFE. */
int sp_python_ticks_on(void);
PyObject *sp_py_set_python_ticks(PyObject *self, PyObject *arg);
PyObject *sp_py_python_tick(PyObject *self, PyObject *arg);

/* ---- the ring and the store's frames (capture.c, sample.c) ------------------------- */

/* Which words of VMStoreContext after epoch_deadline hold the last exit's trampoline
 * frame pointer and PC and the entry trampoline's frame pointer: a per-release fact
 * of wasmtime's, set once from _wasmtime.RELEASE by _native before its layout probe
 * checks them, and before any capture exists. */
PyObject *sp_py_set_store_layout(PyObject *self, PyObject *args);

/* Ring header record (see _ring.py). */
enum { H_TIME, H_CPU, H_WALL, H_PC_START, H_PC_COUNT, H_ORIGIN, H_TICKS, H_TICK_PC, H_FLAGS,
       H_HASH, H_RSS, H_MEMORY, H_TID, H_ENTRY, H_CALLEE, HEADER_FIELDS };
#define FLAG_DEPTH_LIMITED 1
#define ORIGIN_GUEST 0
#define ORIGIN_OUTSIDE (-1)
#define MAX_ACTIVATIONS 256
/* Words in a stack that are not return addresses (bit 63 is never set in a user
 * address): where the guest was entered from Python, and the Python host function
 * a guest activation called (its origin number).  Innermost first, a re-entered
 * guest reads: inner frames, ENTRY, HOST, outer frames, ENTRY.  Which Python frames
 * each ENTRY stands for is not in the stack (so a stack repeated by many calls stays
 * one stack): the record holds the innermost entry's serial, and the Python side
 * knows each entry's frames and the entry it was made from. */
#define MARK_ENTRY 0x8000000000000000ULL
#define MARK_HOST 0xC000000000000000ULL

typedef size_t (*error_new_fn)(const char *message);
typedef size_t (*memory_size_fn)(void *context, const void *memory);
typedef void (*set_deadline_fn)(void *context, uint64_t delta);
typedef size_t (*trap_new_code_fn)(uint8_t code);   /* wasmtime_trap_new_code */
#define MAX_MEMORIES 16
typedef struct {                /* a wasmtime_memory_t (wasmtime 50: 24 bytes), opaque here */
    uint64_t words[3];
} MemoryHandle;

typedef struct {
    uint64_t pc, fp, entry_fp;  /* the suspended guest frames */
    long long origin;           /* the host function it called */
    uint64_t serial;            /* the guest entry it belongs to (0: unknown) */
} Activation;

/* What a sample's stack holds: nothing (Python after the last guest call); the
 * entry being made (Python just before a guest call); the guest's current frames
 * and every suspended activation; or the suspended activations only, from inside
 * the host function the newest one called. */
enum { WALK_NONE, WALK_ENTRY, WALK_CURRENT, WALK_PUSHED };

/* One profiled store's native sampling state.  capture.c creates and binds it and
 * runs its Python methods; sample.c writes its samples (ring position, stack
 * sharing, memory counters).  Touched only with the GIL held or from the epoch
 * callback on the thread running the store -- never by the signal handler. */
typedef struct {
    PyObject_HEAD
    /* the ring (memory owned by the Python Ring object, kept alive by `ring`) */
    PyObject *ring;
    int64_t *header;
    uint64_t *pcs;
    long long capacity, pc_capacity, max_depth;
    int stop_when_full;
    long long count, pc_end, refused;
    long long last_start, last_count;   /* the newest stored stack, for sharing */
    uint64_t last_hash;
    long long shared;                   /* samples that share a stored stack */
    /* the store */
    uint64_t *vm;                 /* &VMStoreContext.epoch_deadline */
    void *context;
    set_deadline_fn set_deadline;
    error_new_fn error_new;
    PyObject *last_exception_module;
    unsigned long long deadline_delta;
    /* the thread running the store now, and where this capture joined it */
    ThreadSlot *slot;             /* NULL: not bound (or the thread table was full) */
    unsigned long long native_tid;
    int check_signals;            /* the main thread: Python signal handlers run here */
    uint64_t bound_ticks;
    int64_t bound_cpu_ns, bound_wall_ns;
    long long unslotted;          /* epoch checks on a thread the table had no room for */
    int use_tick_record;
    int every_thread;             /* wall clock: every tick is due on every thread */
    int enabled;
    const volatile uint64_t *ticks;       /* manual/wakeup tick sources: their counter */
    const volatile int64_t *fake_clock;   /* tests: [thread CPU ns, wall ns], or NULL */
    long long t0_ns, cpu_start;
    long long overhead_ns;
    /* guest entries from Python, outermost first; which were sampled */
    int python_frames;            /* write entry marks (the Python side adds their frames) */
    long long guest_depth;
    uint64_t entries[MAX_ACTIVATIONS];
    long long sampled_depth;      /* entries below this depth are in some sample */
    uint64_t callee_serial;       /* while host_tick records: its Python frames' serial */
    int recording_elsewhere;      /* the sampler thread records for the bound thread */
    /* memory counters: the process's resident set, the guest's linear memories */
    long long page_size;
    long long rss_bytes, rss_read_ns;   /* the last reading, and when it was taken */
    memory_size_fn memory_size;
    MemoryHandle memories[MAX_MEMORIES];
    int memory_count;
    long long memory_bytes;       /* their size at the last sample */
    /* outer activations of a re-entered guest, oldest first */
    Activation act[MAX_ACTIVATIONS];
    int act_count;
    long long act_overflow;       /* host calls in progress beyond MAX_ACTIVATIONS */
    long long activations_lost;   /* guest entries and host calls ever nested beyond it */
    /* the application's own epoch deadline (_app_epochs.py): set from Python, on the
     * thread whose increment_epoch() reached it; the callback then traps as wasmtime would */
    volatile int app_expired;
    trap_new_code_fn trap_new_code;
    int interrupt_code;           /* WASMTIME_TRAP_CODE_INTERRUPT */
} Capture;

static inline int64_t mono_ns(Capture *c)
{
    struct timespec ts;
    if (c->fake_clock)
        return c->fake_clock[1];
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ns_of(&ts);
}

static inline int64_t thread_cpu_ns(Capture *c)
{
    struct timespec ts;
    if (c->fake_clock)
        return c->fake_clock[0];
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ns_of(&ts);
}

/* The serial of the innermost guest entry in progress (0: none, or too deep). */
static inline uint64_t entry_serial(Capture *c)
{
    long long d = c->guest_depth;
    return d > 0 && d <= MAX_ACTIVATIONS ? c->entries[d - 1] : 0;
}

/* capture.c */
extern PyTypeObject sp_CaptureType;
/* wasmtime's epoch-deadline callback, and the finalizer of its data (a Capture). */
size_t sp_epoch_callback(void *context, void *data, uint64_t *next_delta, uint8_t *update_kind);
void sp_release_capture(void *data);
PyObject *sp_py_store_reference(PyObject *self, PyObject *obj);

/* sample.c */
/* The current activation as wasmtime recorded it at the last exit to the host. */
int sp_current_activation(Capture *c, Activation *a);
/* One sample on the bound thread (the caller checked it is bound and a tick is due). */
void sp_record(Capture *c, long long origin, uint64_t total, int how);
/* /proc/self/statm, opened once for every capture (a store-less profile may have
 * hundreds) and closed by reset_threads -- which a forked child runs, since the
 * parent's descriptor would read the parent's memory. */
void sp_statm_open(void);
void sp_statm_close(void);

/* ---- pyframes.c --------------------------------------------------------------------- */

PyObject *sp_py_python_stack(PyObject *self, PyObject *args);
PyObject *sp_py_thread_python_stack(PyObject *self, PyObject *args);

#endif
