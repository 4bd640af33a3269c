/* The per-thread tick records and the tick signal handler (see sigprof.h).
 *
 * Owns: the ThreadSlot table (its claims and the handler's tick fields), the
 * counts of all ticks and of ticks lost to a full table, and each thread's cached
 * kernel id.  The handler runs on whichever thread the signal interrupted, with no
 * lock and no GIL: everything on its path is async-signal-safe. */
#include "sigprof.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static ThreadSlot slots[THREAD_SLOTS];
static volatile uint64_t total_ticks, lost_ticks;

uint64_t sp_current_tid(void)
{
    return (uint64_t)syscall(SYS_gettid);
}

/* The calling thread's id, cached per thread: captures compare it at every epoch
 * callback.  (pthread_self() would not do: glibc hands a finished thread's pthread_t
 * to the next thread.)  Not for the signal handler: a module's thread-local storage
 * may be allocated on first use. */
static __thread uint64_t cached_tid;

uint64_t sp_thread_tid(void)
{
    if (!cached_tid)
        cached_tid = sp_current_tid();
    return cached_tid;
}

void sp_forget_cached_tid(void)
{
    cached_tid = 0;
}

ThreadSlot *sp_slot_for(uint64_t tid)
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

ThreadSlot *sp_slot_at(int i)
{
    return &slots[i];
}

uint64_t sp_total_ticks(void)
{
    return __atomic_load_n(&total_ticks, __ATOMIC_ACQUIRE);
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

void sp_on_tick(int signum, siginfo_t *info, void *ucv)
{
    int saved_errno = errno;
    struct timespec ts;
    (void)signum;
    (void)info;
    __atomic_add_fetch(&total_ticks, 1, __ATOMIC_RELAXED);
    uint64_t tid = sp_current_tid();
    ThreadSlot *s = sp_slot_for(tid);
    if (s) {
        __atomic_add_fetch(&s->begin, 1, __ATOMIC_ACQ_REL);
        s->pc = interrupted_pc(ucv);
        if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
            s->cpu_ns = ns_of(&ts);
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0)
            s->wall_ns = ns_of(&ts);
        __atomic_add_fetch(&s->count, 1, __ATOMIC_RELEASE);
        if (s->in_host > 0 || (s->guests == 0 && sp_python_ticks_on()))
            sp_forward_host_tick(s, tid);
    } else {
        __atomic_add_fetch(&lost_ticks, 1, __ATOMIC_RELAXED);
    }
    sp_bump_engines();
    errno = saved_errno;
}

int sp_read_tick(const ThreadSlot *s, TickRecord *out)
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

/* reset_threads(): forget every thread's record (no capture may be live, no perf
 * event open), and close /proc/self/statm. */
PyObject *sp_py_reset_threads(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (sp_perf_active()) {
        PyErr_SetString(PyExc_RuntimeError, "perf events are open: stop them first");
        return NULL;
    }
    sp_statm_close();
    memset((void *)slots, 0, sizeof slots);
    Py_RETURN_NONE;
}

/* tick_counts() -> (ticks in all threads, ticks lost to a full thread table) */
PyObject *sp_py_tick_counts(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return Py_BuildValue("KK", (unsigned long long)__atomic_load_n(&total_ticks, __ATOMIC_ACQUIRE),
                         (unsigned long long)__atomic_load_n(&lost_ticks, __ATOMIC_ACQUIRE));
}

/* last_tick() -> the calling thread's latest tick (count, cpu_ns, wall_ns, pc, tid), or None */
PyObject *sp_py_last_tick(PyObject *self, PyObject *unused)
{
    TickRecord t;
    (void)self;
    (void)unused;
    uint64_t tid = sp_current_tid();
    ThreadSlot *s = sp_slot_for(tid);
    if (s == NULL || !sp_read_tick(s, &t) || t.count == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("KLLKK", (unsigned long long)t.count, (long long)t.cpu_ns,
                         (long long)t.wall_ns, (unsigned long long)t.pc,
                         (unsigned long long)tid);
}
