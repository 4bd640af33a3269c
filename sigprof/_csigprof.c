/* sigprof's native hot path: the tick signal handler and the epoch-callback capture.
 *
 * Tick handler.  A Python-level signal handler never runs while wasm runs, and a
 * relay thread needs the GIL before it can bump the epoch, so the handler is C:
 * per tick it stores, in the interrupted thread's own record, the PC, that
 * thread's CPU clock and CLOCK_MONOTONIC, then calls wasmtime_engine_increment_epoch
 * (one atomic add) for every profiled engine.  The signal comes from an interval
 * timer or from the thread's own perf task-clock event (finer than the kernel tick).
 *
 * Capture.  One `Capture` object per profiled store; it follows the store to
 * whichever thread runs it and samples that thread's ticks.  Its epoch callback is a C
 * function wasmtime calls directly, with no Python on the path: when the tick
 * count moved it walks the guest's frames and writes one record into the ring the
 * Python side allocated.  The walk follows wasmtime's own: the store's
 * VMStoreContext (a repr(C) struct the compiled code uses) holds the frame pointer
 * of the last wasm->host exit trampoline, the PC wasm exited at, and the frame
 * pointer of the host->wasm entry trampoline; Cranelift code always keeps frame
 * pointers, so [fp] / [fp+8] lead from the exit to the entry through exactly the
 * guest frames.  A host function that re-enters the guest pushes the outer
 * activation (its exit PC/FP and entry FP) so inner samples continue into it,
 * with a mark for the host function between them and, per guest entry, a mark
 * the Python side replaces with the Python frames that made the call.
 * A stack equal to the newest stored one is not stored again: the record points
 * at that copy.  Each record also holds the process's resident set (read at most
 * once a millisecond) and the size of the guest memories the profile names.
 *
 * The only Python the callback touches: in the main thread, PyErr_CheckSignals,
 * so Ctrl-C raised by a Python handler stops the guest (the exception is handed to
 * wasmtime-py through wasmtime._func.LAST_EXCEPTION, which re-raises it).
 *
 * The `_GNU_SOURCE` below comes after Python.h, which defines it first (pyconfig.h).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define _GNU_SOURCE 1          /* F_SETSIG, F_SETOWN_EX */
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

/* ---- per-thread tick records ------------------------------------------------- */

/* A process-wide CPU timer's signal is delivered to the thread that was running
 * when the timer expired, so the handler charges each tick to the interrupted
 * thread: a fixed open-addressing table keyed by kernel thread id, claimed with a
 * compare-and-swap (async-signal-safe, no allocation).  The handler writes only
 * its own thread's tick fields, under a seqlock (`begin` before, `count` after);
 * the captures running on that thread own the sampling fields.  A thread that
 * finds the table full has its ticks counted as lost. */
#define THREAD_SLOTS 4096

typedef struct {
    volatile uint64_t tid;        /* 0: free */
    /* written by the tick handler, on this thread */
    volatile uint64_t count;      /* ticks so far (seqlock end) */
    volatile uint64_t begin;      /* seqlock begin */
    volatile int64_t cpu_ns;      /* this thread's CPU clock at the tick */
    volatile int64_t wall_ns;     /* CLOCK_MONOTONIC at the tick */
    volatile uint64_t pc;         /* interrupted instruction pointer */
    /* written by captures on this thread, never by the handler */
    int ready;                    /* the fields below were initialised */
    uint64_t consumed;            /* ticks already charged to a sample */
    int64_t cpu_prev, wall_prev;  /* where the last sample's interval ended */
    int64_t pending_ns;           /* profiler time to leave out of the next interval */
    int perf_fd;                  /* this thread's perf event + 1 (0: none) */
    uint64_t seen;                /* the own tick whose record the last sample used */
    int in_host;                  /* Python host calls in progress (read by the handler) */
    int64_t host_since_ns;        /* CLOCK_MONOTONIC when the newest host call began */
} ThreadSlot;

typedef struct {                  /* a consistent copy of a slot's latest tick */
    uint64_t count;
    int64_t cpu_ns, wall_ns;
    uint64_t pc;
} TickRecord;

#define MAX_ENGINES 256
typedef void (*increment_epoch_fn)(void *engine);

/* /proc/self/statm, opened once for every capture (a store-less profile may have
 * hundreds) and closed by reset_threads -- which a forked child runs, since the
 * parent's descriptor would read the parent's memory.  -1: not open. */
static int statm_fd = -1;

static ThreadSlot slots[THREAD_SLOTS];
static volatile uint64_t total_ticks, lost_ticks;
static increment_epoch_fn increment_epoch;
static void *volatile engines[MAX_ENGINES];   /* NULL: a free place */
static volatile int engine_high;              /* places in use are below this */
static struct sigaction previous_action;
static int installed_signum;
/* Ticks landing in a Python host function are handed to Python, which reads the
 * frames the host function is running.  On the main thread: to the Python-level
 * handler for `host_tick_signum` (PyErr_SetInterruptEx, async-signal-safe), which
 * runs at the next bytecode boundary, inside the host function.  Elsewhere CPython
 * has no such hook: the thread's id goes down `host_tick_fd` (a non-blocking pipe;
 * write is async-signal-safe) to a sampler thread, which reads the thread's frames
 * once it holds the GIL (the main thread's too, when the profile started elsewhere
 * and no Python signal handler could be set).  0 / -1: off. */
static int host_tick_signum;
static int host_tick_fd = -1;
static uint64_t main_tid;
/* The sampler thread gets the GIL a switch interval (5 ms) after asking, at best:
 * a host call shorter than that has returned by then, and waking it for nothing
 * costs the thread GIL hand-offs.  So only ticks at least this far into a host call
 * go down the pipe. */
#define HOST_TICK_AFTER_NS 2000000

static inline int64_t ns_of(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static inline uint64_t current_tid(void)
{
    return (uint64_t)syscall(SYS_gettid);
}

/* The calling thread's id, cached per thread: captures compare it at every epoch
 * callback.  (pthread_self() would not do: glibc hands a finished thread's pthread_t
 * to the next thread.)  Not for the signal handler: a module's thread-local storage
 * may be allocated on first use. */
static __thread uint64_t cached_tid;

static inline uint64_t thread_tid(void)
{
    if (!cached_tid)
        cached_tid = current_tid();
    return cached_tid;
}

/* In a forked child the one thread has a new id. */
static void forget_cached_tid(void)
{
    cached_tid = 0;
}

/* The slot of thread `tid`, claimed if it has none; NULL when the table is full. */
static ThreadSlot *slot_for(uint64_t tid)
{
    uint64_t start = (tid * 0x9E3779B97F4A7C15ULL) >> 52;    /* 12 bits: THREAD_SLOTS */
    for (uint64_t k = 0; k < THREAD_SLOTS; k++) {
        ThreadSlot *s = &slots[(start + k) & (THREAD_SLOTS - 1)];
        uint64_t held = __atomic_load_n(&s->tid, __ATOMIC_ACQUIRE);
        if (held == tid)
            return s;
        if (held == 0) {
            uint64_t expected = 0;
            if (__atomic_compare_exchange_n(&s->tid, &expected, tid, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE) || expected == tid)
                return s;
        }
    }
    return NULL;
}

static inline uint64_t interrupted_pc(void *ucv)
{
    ucontext_t *uc = (ucontext_t *)ucv;
#if defined(__x86_64__)
    return (uint64_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uint64_t)uc->uc_mcontext.pc;
#else
    (void)uc;
    return 0;
#endif
}

static void on_tick(int signum, siginfo_t *info, void *ucv)
{
    int saved_errno = errno;
    struct timespec ts;
    (void)signum;
    (void)info;
    __atomic_add_fetch(&total_ticks, 1, __ATOMIC_RELAXED);
    uint64_t tid = current_tid();
    ThreadSlot *s = slot_for(tid);
    if (s) {
        __atomic_add_fetch(&s->begin, 1, __ATOMIC_ACQ_REL);
        s->pc = interrupted_pc(ucv);
        if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
            s->cpu_ns = ns_of(&ts);
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0)
            s->wall_ns = ns_of(&ts);
        __atomic_add_fetch(&s->count, 1, __ATOMIC_RELEASE);
        if (s->in_host > 0) {
            int signum = __atomic_load_n(&host_tick_signum, __ATOMIC_ACQUIRE);
            int fd = __atomic_load_n(&host_tick_fd, __ATOMIC_ACQUIRE);
            if (signum && tid == main_tid)
                PyErr_SetInterruptEx(signum);
            else if (fd >= 0 && s->wall_ns - s->host_since_ns >= HOST_TICK_AFTER_NS
                     && write(fd, &tid, sizeof tid) < 0) {
                /* full (the sampler is behind): this tick goes to the host function */
            }
        }
    } else {
        __atomic_add_fetch(&lost_ticks, 1, __ATOMIC_RELAXED);
    }
    int n = __atomic_load_n(&engine_high, __ATOMIC_ACQUIRE);
    for (int i = 0; i < n; i++) {
        void *engine = __atomic_load_n(&engines[i], __ATOMIC_ACQUIRE);
        if (engine)
            increment_epoch(engine);
    }
    errno = saved_errno;
}

/* A consistent copy of a slot's latest tick; 0 if a handler kept interrupting the read. */
static int read_tick(const ThreadSlot *s, TickRecord *out)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        uint64_t count = __atomic_load_n(&s->count, __ATOMIC_ACQUIRE);
        out->cpu_ns = s->cpu_ns;
        out->wall_ns = s->wall_ns;
        out->pc = s->pc;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&s->begin, __ATOMIC_ACQUIRE) == count) {
            out->count = count;
            return 1;
        }
    }
    return 0;
}

static PyObject *py_install(PyObject *self, PyObject *args)
{
    int signum;
    long long increment_address;
    (void)self;
    if (!PyArg_ParseTuple(args, "iL", &signum, &increment_address))
        return NULL;
    if (installed_signum) {
        PyErr_SetString(PyExc_RuntimeError, "the native tick handler is already installed");
        return NULL;
    }
    increment_epoch = (increment_epoch_fn)(uintptr_t)increment_address;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_tick;
    action.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    if (sigaction(signum, &action, &previous_action) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    installed_signum = signum;
    Py_RETURN_NONE;
}

/* add_engine(address) / remove_engine(address): the engines whose epoch each tick
 * bumps.  The caller keeps a removed engine alive while the handler is installed
 * (a handler already running may still hold its address). */
static PyObject *py_add_engine(PyObject *self, PyObject *arg)
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

static PyObject *py_remove_engine(PyObject *self, PyObject *arg)
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

/* ---- perf events: per-thread CPU-time ticks finer than the kernel tick ---------- */

/* The CPU-time itimers fire from the scheduler tick (at most CONFIG_HZ times a
 * CPU-second).  A perf software task-clock event per thread runs on a
 * high-resolution timer instead: every `perf_period_ns` of the thread's own CPU
 * time it overflows and, with O_ASYNC and F_SETSIG, sends `perf_signum` to that
 * very thread (F_SETOWN_EX), whose handler is on_tick as for the itimer.  User mode
 * only (exclude_kernel), which perf_event_paranoid=2 allows for one's own threads.
 * Each thread gets its event the first time a capture binds to it. */
static long long perf_period_ns;        /* 0: perf events off */
static int perf_signum;
static long long perf_failures;         /* threads whose event could not be opened */
static int perf_last_errno;
/* One descriptor per covered thread: in a program that keeps starting threads they
 * would pile up, and the descriptors are the application's too.  Past
 * PERF_SWEEP_AT open events, opening another first closes those of threads that
 * have exited; never more than PERF_MAX_OPEN (a thread beyond is counted as not
 * covered).  Binds run on many threads at once: the lock keeps a descriptor from
 * being closed twice. */
#define PERF_SWEEP_AT 64
#define PERF_MAX_OPEN 512
static pthread_mutex_t perf_lock = PTHREAD_MUTEX_INITIALIZER;
static int perf_open_count;

/* Open and start a task-clock event for the calling thread; -1 and errno on failure. */
static int perf_open_thread(uint64_t tid)
{
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.sample_period = (uint64_t)perf_period_ns;
    attr.disabled = 1;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    attr.wakeup_events = 1;
    int fd = (int)syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0)
        return -1;
    struct f_owner_ex owner = {F_OWNER_TID, (pid_t)tid};
    if (fcntl(fd, F_SETFL, O_ASYNC) < 0 || fcntl(fd, F_SETSIG, perf_signum) < 0
        || fcntl(fd, F_SETOWN_EX, &owner) < 0 || ioctl(fd, PERF_EVENT_IOC_RESET, 0) < 0
        || ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* Off, and no longer O_ASYNC, so that an overflow still in flight sends no signal
 * once it is closed (or once our handler is gone). */
static void perf_close(ThreadSlot *s)
{
    int fd = s->perf_fd - 1;
    ioctl(fd, PERF_EVENT_IOC_DISABLE, 0);
    fcntl(fd, F_SETFL, 0);
    close(fd);
    s->perf_fd = 0;
}

/* Close the events of threads that have exited (caller holds perf_lock). */
static void perf_sweep_exited(void)
{
    pid_t pid = getpid();
    for (int i = 0; i < THREAD_SLOTS; i++) {
        ThreadSlot *s = &slots[i];
        if (s->perf_fd > 0 && syscall(SYS_tgkill, pid, (pid_t)s->tid, 0) < 0 && errno == ESRCH) {
            perf_close(s);
            perf_open_count--;
        }
    }
}

/* The calling thread's slot gets its event if perf events are on and it has none. */
static void perf_cover(ThreadSlot *s, uint64_t tid)
{
    if (!perf_period_ns || s->perf_fd)
        return;
    pthread_mutex_lock(&perf_lock);
    if (perf_open_count >= PERF_SWEEP_AT)
        perf_sweep_exited();
    int fd = -1;
    if (perf_open_count < PERF_MAX_OPEN)
        fd = perf_open_thread(tid);
    else
        errno = EMFILE;
    if (fd < 0) {
        perf_failures++;
        perf_last_errno = errno;
        s->perf_fd = -1;              /* tried: do not try again for this thread */
    } else {
        s->perf_fd = fd + 1;
        perf_open_count++;
    }
    pthread_mutex_unlock(&perf_lock);
}

/* perf_start(period_ns, signum) -> None: perf events on, and the calling thread covered
 * now (OSError if the system refuses them: the caller falls back to the itimer). */
static PyObject *py_perf_start(PyObject *self, PyObject *args)
{
    long long period;
    int signum;
    (void)self;
    if (!PyArg_ParseTuple(args, "Li", &period, &signum))
        return NULL;
    if (period < 1000) {
        PyErr_SetString(PyExc_ValueError, "perf period below 1 us");
        return NULL;
    }
    uint64_t tid = current_tid();
    ThreadSlot *s = slot_for(tid);
    if (s == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "thread table full");
        return NULL;
    }
    perf_period_ns = period;
    perf_signum = signum;
    perf_failures = 0;
    perf_open_count = 0;
    s->perf_fd = 0;
    perf_cover(s, tid);
    if (s->perf_fd < 0) {
        perf_period_ns = 0;
        s->perf_fd = 0;
        errno = perf_last_errno;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* perf_stop(disable=True) -> threads whose event could not be opened: every event
 * closed.  A forked child passes disable=False: its descriptors share the parent's
 * open events, which must keep running; it only closes its copies. */
static PyObject *py_perf_stop(PyObject *self, PyObject *args)
{
    int disable = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "|p", &disable))
        return NULL;
    if (disable) {
        pthread_mutex_lock(&perf_lock);
    } else {
        /* A forked child has one thread; a lock held at the fork stays held here. */
        pthread_mutex_init(&perf_lock, NULL);
        pthread_mutex_lock(&perf_lock);
    }
    perf_period_ns = 0;
    for (int i = 0; i < THREAD_SLOTS; i++) {
        if (slots[i].perf_fd > 0 && !disable)
            close(slots[i].perf_fd - 1);
        else if (slots[i].perf_fd > 0)
            perf_close(&slots[i]);
        slots[i].perf_fd = 0;
    }
    perf_open_count = 0;
    pthread_mutex_unlock(&perf_lock);
    return PyLong_FromLongLong(perf_failures);
}

/* set_host_ticks(signum, fd): hand ticks in host calls to Python -- on the main
 * thread to the Python handler of `signum` (0: none, the pipe then), elsewhere down
 * the pipe `fd` (-1: none). */
static PyObject *py_set_host_ticks(PyObject *self, PyObject *args)
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

/* reset_threads(): forget every thread's record (no capture may be live, no perf
 * event open), and close /proc/self/statm. */
static PyObject *py_reset_threads(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (perf_period_ns) {
        PyErr_SetString(PyExc_RuntimeError, "perf events are open: stop them first");
        return NULL;
    }
    if (statm_fd >= 0) {
        close(statm_fd);
        statm_fd = -1;
    }
    memset((void *)slots, 0, sizeof slots);
    Py_RETURN_NONE;
}

static PyObject *py_handler_is_ours(PyObject *self, PyObject *unused)
{
    struct sigaction now;
    (void)self;
    (void)unused;
    if (!installed_signum || sigaction(installed_signum, NULL, &now) != 0)
        Py_RETURN_FALSE;
    return PyBool_FromLong((now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_tick);
}

/* Restore the action saved at install (restore=True) or just forget it (someone
 * else's handler replaced ours and stays). */
static PyObject *py_uninstall(PyObject *self, PyObject *args)
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

/* tick_counts() -> (ticks in all threads, ticks lost to a full thread table) */
static PyObject *py_tick_counts(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return Py_BuildValue("KK", (unsigned long long)__atomic_load_n(&total_ticks, __ATOMIC_ACQUIRE),
                         (unsigned long long)__atomic_load_n(&lost_ticks, __ATOMIC_ACQUIRE));
}

/* last_tick() -> the calling thread's latest tick (count, cpu_ns, wall_ns, pc, tid), or None */
static PyObject *py_last_tick(PyObject *self, PyObject *unused)
{
    TickRecord t;
    (void)self;
    (void)unused;
    uint64_t tid = current_tid();
    ThreadSlot *s = slot_for(tid);
    if (s == NULL || !read_tick(s, &t) || t.count == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("KLLKK", (unsigned long long)t.count, (long long)t.cpu_ns,
                         (long long)t.wall_ns, (unsigned long long)t.pc,
                         (unsigned long long)tid);
}

static PyObject *py_disposition(PyObject *self, PyObject *args)
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

/* ---- the capture --------------------------------------------------------------- */

/* Words of VMStoreContext after epoch_deadline (wasmtime 50): execution_version,
 * stack_limit, gc_heap (base, length), then the exit/entry fields walked here.
 * Exported, so that _native's layout probe checks these very indices. */
#define VM_EXIT_TRAMPOLINE_FP 5
#define VM_EXIT_PC 6
#define VM_ENTRY_FP 8

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
#define MAX_MEMORIES 16
typedef struct {                /* a wasmtime_memory_t (wasmtime 50: 24 bytes), opaque here */
    uint64_t words[3];
} MemoryHandle;
typedef void (*set_deadline_fn)(void *context, uint64_t delta);

typedef struct {
    uint64_t pc, fp, entry_fp;  /* the suspended guest frames */
    long long origin;           /* the host function it called */
    uint64_t serial;            /* the guest entry it belongs to (0: unknown) */
} Activation;

static uint64_t next_entry_serial;       /* process-wide: serials never repeat */

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
    long long act_overflow;
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

/* Ticks of the bound thread so far (manual and wakeup sources: their one counter). */
static inline uint64_t ticks_now(Capture *c)
{
    if (c->use_tick_record && c->every_thread)
        return __atomic_load_n(&total_ticks, __ATOMIC_ACQUIRE);
    if (c->use_tick_record)
        return __atomic_load_n(&c->slot->count, __ATOMIC_ACQUIRE);
    return __atomic_load_n(c->ticks, __ATOMIC_ACQUIRE);
}

/* Follow the store to the calling thread.  A tick is charged once, to the thread
 * it interrupted, by whichever capture on that thread samples first: the
 * sampling clocks live in the thread's slot.  Returns 0 if the thread has no slot. */
static int bind(Capture *c)
{
    uint64_t tid = thread_tid();
    if (c->slot && c->native_tid == tid)
        return 1;
    c->native_tid = tid;
    c->check_signals = tid == (uint64_t)getpid();
    c->slot = slot_for(tid);
    if (c->slot == NULL) {
        c->unslotted++;
        return 0;
    }
    ThreadSlot *s = c->slot;
    perf_cover(s, tid);
    int64_t cpu = thread_cpu_ns(c), wall = mono_ns(c);
    if (!s->ready) {
        s->consumed = ticks_now(c);
        s->cpu_prev = cpu;
        s->wall_prev = wall;
        s->pending_ns = 0;
        s->ready = 1;
    }
    /* Nothing from before this capture joined the thread is charged to it. */
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
    if (s && c->native_tid == thread_tid()
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

/* Walk one contiguous run of wasm frames: `pc`/`fp` of the newest, until the
 * entry trampoline's frame pointer.  Returns frames written; *limited is set when
 * `room` ran out first or the chain did not look like wasmtime's. */
static long long walk(uint64_t pc, uint64_t fp, uint64_t entry_fp, uint64_t *out,
                      long long room, int *limited)
{
    long long n = 0;
    while (fp != entry_fp) {
        if (n >= room || fp == 0 || (fp & 7) || fp > entry_fp) {
            *limited = 1;
            break;
        }
        out[n++] = pc;
        const uint64_t *frame = (const uint64_t *)(uintptr_t)fp;
        pc = frame[1];
        uint64_t older = frame[0];
        if (older <= fp) {
            *limited = 1;
            break;
        }
        fp = older;
    }
    return n;
}

/* The current activation as wasmtime recorded it at the last exit to the host. */
static int current_activation(Capture *c, Activation *a)
{
    uint64_t tramp_fp = c->vm[VM_EXIT_TRAMPOLINE_FP];
    a->pc = c->vm[VM_EXIT_PC];
    a->entry_fp = c->vm[VM_ENTRY_FP];
    if (tramp_fp == 0 || a->pc == 0 || a->entry_fp == 0 || (tramp_fp & 7)) {
        a->fp = 0;
        return 0;
    }
    a->fp = *(const uint64_t *)(uintptr_t)tramp_fp;     /* the last wasm frame's FP */
    return 1;
}

static inline uint64_t entry_serial(Capture *c)
{
    long long d = c->guest_depth;
    return d > 0 && d <= MAX_ACTIVATIONS ? c->entries[d - 1] : 0;
}

/* What a sample's stack holds: nothing (Python after the last guest call); the
 * entry being made (Python just before a guest call); the guest's current frames
 * and every suspended activation; or the suspended activations only, from inside
 * the host function the newest one called. */
enum { WALK_NONE, WALK_ENTRY, WALK_CURRENT, WALK_PUSHED };

/* Resident set size from /proc/self/statm (its second field, in pages); -1 unknown.
 * Read at most once a millisecond (a system call; a memory track needs no more). */
#define RSS_EVERY_NS 1000000
static long long resident_bytes(Capture *c, int64_t now_ns)
{
    char buf[96];
    if (statm_fd < 0)
        return -1;
    if (c->rss_read_ns && now_ns - c->rss_read_ns < RSS_EVERY_NS)
        return c->rss_bytes;
    c->rss_read_ns = now_ns;
    ssize_t n = pread(statm_fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *p = buf;
    while (*p && *p != ' ')
        p++;
    c->rss_bytes = strtoll(p, NULL, 10) * c->page_size;
    return c->rss_bytes;
}

/* Write the stack `how` names at `out` (room: max_depth words); returns words written. */
static long long write_stack(Capture *c, int how, uint64_t *out, int *limited)
{
    long long n = 0, room = c->max_depth;
#define PUT(word) do { if (n < room) out[n++] = (word); else *limited = 1; } while (0)
    if (how == WALK_CURRENT) {
        Activation a;
        if (current_activation(c, &a))
            n = walk(a.pc, a.fp, a.entry_fp, out, room, limited);
    }
    if ((how == WALK_CURRENT || how == WALK_ENTRY) && c->python_frames && entry_serial(c))
        PUT(MARK_ENTRY);
    if (how == WALK_CURRENT || how == WALK_PUSHED) {
        for (int i = c->act_count - 1; i >= 0 && !*limited; i--) {
            Activation *a = &c->act[i];
            if (!(how == WALK_PUSHED && i == c->act_count - 1))
                PUT(MARK_HOST | (uint64_t)a->origin);
            if (a->fp && !*limited)
                n += walk(a->pc, a->fp, a->entry_fp, out + n, room - n, limited);
            if (c->python_frames && a->serial)
                PUT(MARK_ENTRY);
        }
    }
#undef PUT
    if (c->python_frames && n && c->guest_depth > c->sampled_depth)
        c->sampled_depth = c->guest_depth;      /* these entries' Python frames are needed */
    return n;
}

/* One sample on the bound thread (the caller checked bind() and tick_due()). */
static void record(Capture *c, long long origin, uint64_t total, int how)
{
    ThreadSlot *s = c->slot;
    int64_t wall = mono_ns(c);
    int64_t cpu_end = -1, wall_end = wall;
    uint64_t tick_pc = 0;
    TickRecord t;
    /* The interval starts where the thread's last sample ended, less our own time,
     * and not before this capture joined the thread. */
    int64_t cpu_from = s->cpu_prev + s->pending_ns, wall_from = s->wall_prev + s->pending_ns;
    if (cpu_from < c->bound_cpu_ns)
        cpu_from = c->bound_cpu_ns;
    if (wall_from < c->bound_wall_ns)
        wall_from = c->bound_wall_ns;
    uint64_t consumed = s->consumed > c->bound_ticks ? s->consumed : c->bound_ticks;
    /* This thread's own tick record, if a tick interrupted it since its last sample
     * (with every_thread, the due tick may have interrupted another thread). */
    if (c->use_tick_record && read_tick(s, &t) && t.count != s->seen) {
        s->seen = t.count;
        tick_pc = t.pc;
        /* The interval ends at the tick, which is in this thread's past. */
        if (t.cpu_ns >= s->cpu_prev)
            cpu_end = t.cpu_ns;
        if (t.wall_ns >= s->wall_prev && t.wall_ns <= wall)
            wall_end = t.wall_ns;
    }
    if (cpu_end < 0)
        cpu_end = c->recording_elsewhere ? cpu_from : thread_cpu_ns(c);
    long long number = c->count;
    long long end = c->pc_end;
    long long pos = end % c->pc_capacity;
    if (c->stop_when_full && (number >= c->capacity || pos + c->max_depth > c->pc_capacity)) {
        /* Counted as lost; the clocks are not reset, so its time shows as unsampled. */
        c->refused++;
        s->consumed = total;
        return;
    }
    if (pos + c->max_depth > c->pc_capacity) {
        end += c->pc_capacity - pos;      /* skip to the start: a sample never wraps */
        pos = 0;
    }
    uint64_t *out = c->pcs + pos;
    int limited = 0;
    long long n = write_stack(c, how, out, &limited);
    uint64_t hash = 1469598103934665603ULL;        /* FNV-1a over the raw stack */
    for (long long i = 0; i < n; i++)
        hash = (hash ^ out[i]) * 1099511628211ULL;
    /* The same stack as the newest stored one (a deep program spinning in one place):
     * point at that copy instead of storing another, while it is less than half a
     * ring old and the scratch slot does not lie over it. */
    long long start = end, new_end = end + n;
    if (n > 0 && n == c->last_count && hash == c->last_hash
        && c->pc_end - c->last_start <= c->pc_capacity / 2
        && end + n - c->last_start <= c->pc_capacity
        && memcmp(c->pcs + c->last_start % c->pc_capacity, out, (size_t)n * 8) == 0) {
        start = c->last_start;
        new_end = c->pc_end;
        c->shared++;
    } else if (n > 0) {
        c->last_start = end;
        c->last_count = n;
        c->last_hash = hash;
    }
    int64_t *h = c->header + (number % c->capacity) * HEADER_FIELDS;
    long long cpu_ns = cpu_end - cpu_from;
    long long wall_ns = wall_end - wall_from;
    h[H_TIME] = wall_end - c->t0_ns;
    h[H_CPU] = cpu_ns > 0 ? cpu_ns : 0;
    h[H_WALL] = wall_ns > 0 ? wall_ns : 0;
    h[H_PC_START] = start;
    h[H_PC_COUNT] = n;
    h[H_ORIGIN] = origin;
    h[H_TICKS] = (int64_t)(total - consumed);
    h[H_TICK_PC] = (int64_t)(tick_pc & 0x7fffffffffffffffULL);
    h[H_FLAGS] = limited ? FLAG_DEPTH_LIMITED : 0;
    h[H_HASH] = (int64_t)hash;
    h[H_RSS] = resident_bytes(c, wall);
    if (!c->recording_elsewhere) {      /* the store is the bound thread's to read */
        long long memory = 0;
        for (int i = 0; i < c->memory_count; i++)
            memory += (long long)c->memory_size(c->context, &c->memories[i]);
        c->memory_bytes = memory;
    }
    h[H_MEMORY] = c->memory_bytes;
    h[H_TID] = (int64_t)c->native_tid;
    h[H_ENTRY] = c->python_frames && how != WALK_NONE ? (int64_t)entry_serial(c) : 0;
    h[H_CALLEE] = (int64_t)c->callee_serial;
    c->pc_end = new_end;
    c->count = number + 1;                /* commit last */
    s->consumed = total;
    int64_t after = mono_ns(c);
    /* Our own time since the sample began is not guest time: it is taken out of
     * the next interval (measured on the monotonic clock: a vDSO read, where the
     * thread CPU clock is a system call; the two agree for this non-blocking code). */
    c->overhead_ns += after - wall;
    s->cpu_prev = cpu_end;
    s->wall_prev = wall_end;
    s->pending_ns = c->recording_elsewhere ? 0 : after - wall;   /* not this thread's time */
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

static size_t epoch_callback(void *context, void *data, uint64_t *next_delta, uint8_t *update_kind)
{
    Capture *c = (Capture *)data;
    (void)context;
    *next_delta = c->deadline_delta;      /* never 0 in a profile: that re-enters at every check */
    *update_kind = 0;
    if (!c->enabled || !bind(c))
        return 0;
    uint64_t total = ticks_now(c);
    if (tick_due(c, total))
        record(c, ORIGIN_GUEST, total, WALK_CURRENT);
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
static void release_capture(void *data)
{
#if PY_VERSION_HEX >= 0x030D0000
    if (Py_IsFinalizing() || !Py_IsInitialized())
#else
    if (_Py_IsFinalizing() || !Py_IsInitialized())
#endif
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
                            "error_new", "last_exception_module", "python_frames", NULL};
    long long header, pcs, vm, context, set_deadline, error_new;
    PyObject *ring, *module;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OLLLLLpLLLLOp", names, &ring, &header, &pcs,
                                     &c->capacity, &c->pc_capacity, &c->max_depth,
                                     &c->stop_when_full, &vm, &context, &set_deadline,
                                     &error_new, &module, &c->python_frames))
        return -1;
    if (c->capacity < 1 || c->max_depth < 1 || c->pc_capacity < c->max_depth || !vm) {
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
    if (statm_fd < 0)
        statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
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
        current_activation(c, a);
        a->origin = k;
        a->serial = entry_serial(c);
        c->act_count++;
    } else {
        c->act_overflow++;
    }
    if (c->enabled && bind(c)) {
        if (c->python_frames) {       /* only then is a tick in host code handed on */
            c->slot->host_since_ns = mono_ns(c);
            c->slot->in_host++;
        }
        uint64_t total = ticks_now(c);
        if (tick_due(c, total))
            record(c, k, total, WALK_PUSHED);
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
            record(c, k, total, WALK_PUSHED);
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
    record(c, c->act[c->act_count - 1].origin, total, WALK_PUSHED);
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
    if (c->guest_depth > 0 && c->enabled && c->python_frames) {
        ThreadSlot *s = own_slot(c);
        if (s && s->in_host > 0)
            s->in_host--;             /* a host function re-enters: Python pauses */
    }
    if (c->guest_depth < MAX_ACTIVATIONS)
        c->entries[c->guest_depth] = __atomic_add_fetch(&next_entry_serial, 1, __ATOMIC_RELAXED);
    c->guest_depth++;
    if (c->guest_depth == 1 && c->enabled) {
        if (bind(c)) {
            uint64_t total = ticks_now(c);
            if (tick_due(c, total))
                record(c, ORIGIN_OUTSIDE, total, WALK_ENTRY);
        }
        c->set_deadline(c->context, 1);
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
    int here = c->slot != NULL && c->native_tid == thread_tid();
    if (c->enabled && here) {
        uint64_t total = ticks_now(c);
        if (tick_due(c, total))
            record(c, ORIGIN_OUTSIDE, total, WALK_NONE);
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
    return PyBool_FromLong(c->slot != NULL && c->native_tid == thread_tid());
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
    {"enabled", T_INT, offsetof(Capture, enabled), 0, "sampling on"},
    {"deadline_delta", T_ULONGLONG, offsetof(Capture, deadline_delta), 0,
     "epoch deadline delta the callback sets (1; benchmarks use 0)"},
    {"guest_depth", T_LONGLONG, offsetof(Capture, guest_depth), READONLY, "nested guest calls"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CaptureType = {
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
static PyObject *py_store_reference(PyObject *self, PyObject *obj)
{
    (void)self;
    if (!PyObject_TypeCheck(obj, &CaptureType)) {
        PyErr_SetString(PyExc_TypeError, "expected a Capture");
        return NULL;
    }
    Py_INCREF(obj);
    return PyLong_FromVoidPtr(obj);
}

/* python_stack(frame, stop_code) -> ((code, lasti, code, lasti, ...), reached_stop): the
 * Python frames from `frame` outwards, innermost first, up to the first frame running
 * `stop_code` (not included).  What the Python side reads at the exit of a sampled
 * guest call: in C because it runs once per such call, while the guest is profiled. */
static PyObject *py_python_stack(PyObject *self, PyObject *args)
{
    PyObject *start, *stop;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &start, &stop))
        return NULL;
    if (start != Py_None && !PyFrame_Check(start)) {
        PyErr_SetString(PyExc_TypeError, "python_stack needs a frame or None");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    PyFrameObject *frame = start == Py_None ? NULL : (PyFrameObject *)start;
    Py_XINCREF(frame);
    int reached = 0;
    while (frame != NULL) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        if ((PyObject *)code == stop) {
            Py_DECREF(code);
            reached = 1;
            break;
        }
        PyObject *lasti = PyLong_FromLong(PyFrame_GetLasti(frame));
        int failed = lasti == NULL || PyList_Append(out, (PyObject *)code) < 0
                     || PyList_Append(out, lasti) < 0;
        Py_DECREF(code);
        Py_XDECREF(lasti);
        if (failed) {
            Py_DECREF(frame);
            Py_DECREF(out);
            return NULL;
        }
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    Py_XDECREF(frame);
    PyObject *flat = PyList_AsTuple(out);
    Py_DECREF(out);
    if (flat == NULL)
        return NULL;
    return Py_BuildValue("(Ni)", flat, reached);
}

static PyMethodDef module_methods[] = {
    {"python_stack", py_python_stack, METH_VARARGS,
     "python_stack(frame, stop_code) -> ((code, lasti, ...), reached stop_code)"},
    {"install", py_install, METH_VARARGS, "install(signum, increment_epoch_address)"},
    {"add_engine", py_add_engine, METH_O, "bump this engine's epoch at every tick"},
    {"remove_engine", py_remove_engine, METH_O, "stop bumping this engine's epoch"},
    {"reset_threads", py_reset_threads, METH_NOARGS, "forget every thread's tick record"},
    {"set_host_ticks", py_set_host_ticks, METH_VARARGS,
     "set_host_ticks(signum, fd): ticks in host calls go to Python (see the source)"},
    {"perf_start", py_perf_start, METH_VARARGS,
     "perf_start(period_ns, signum): per-thread task-clock events from now on"},
    {"perf_stop", py_perf_stop, METH_VARARGS,
     "close every thread's event; returns threads whose event could not be opened"},
    {"uninstall", py_uninstall, METH_VARARGS, "uninstall(restore=True)"},
    {"handler_is_ours", py_handler_is_ours, METH_NOARGS, "is our handler still installed?"},
    {"tick_counts", py_tick_counts, METH_NOARGS, "(ticks so far, ticks lost)"},
    {"last_tick", py_last_tick, METH_NOARGS,
     "the calling thread's latest tick: (count, cpu_ns, wall_ns, pc, tid) or None"},
    {"disposition", py_disposition, METH_VARARGS, "raw handler address for a signal"},
    {"store_reference", py_store_reference, METH_O,
     "a new reference to a Capture, as the address the store's callback holds"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "sigprof._csigprof", "sigprof's native tick handler and capture.", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__csigprof(void)
{
    if (PyType_Ready(&CaptureType) < 0)
        return NULL;
    if (pthread_atfork(NULL, NULL, forget_cached_tid) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "pthread_atfork failed");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CaptureType);
    if (PyModule_AddObject(m, "Capture", (PyObject *)&CaptureType) < 0
        || PyModule_AddObject(m, "EPOCH_CALLBACK", PyLong_FromVoidPtr((void *)(uintptr_t)epoch_callback)) < 0
        || PyModule_AddObject(m, "RELEASE_CAPTURE", PyLong_FromVoidPtr((void *)(uintptr_t)release_capture)) < 0
        || PyModule_AddIntConstant(m, "HEADER_FIELDS", HEADER_FIELDS) < 0
        || PyModule_AddIntConstant(m, "VM_EXIT_TRAMPOLINE_FP", VM_EXIT_TRAMPOLINE_FP) < 0
        || PyModule_AddIntConstant(m, "VM_EXIT_PC", VM_EXIT_PC) < 0
        || PyModule_AddIntConstant(m, "VM_ENTRY_FP", VM_ENTRY_FP) < 0
        || PyModule_AddIntConstant(m, "MAX_ACTIVATIONS", MAX_ACTIVATIONS) < 0
        || PyModule_AddObject(m, "MARK_ENTRY", PyLong_FromUnsignedLongLong(MARK_ENTRY)) < 0
        || PyModule_AddObject(m, "MARK_HOST", PyLong_FromUnsignedLongLong(MARK_HOST)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
