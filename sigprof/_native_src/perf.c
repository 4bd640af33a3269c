/* Per-thread perf task-clock events: CPU-time ticks finer than the kernel tick.
 *
 * The CPU-time itimers fire from the scheduler tick (at most CONFIG_HZ times a
 * CPU-second).  A perf software task-clock event per thread runs on a
 * high-resolution timer instead: every `perf_period_ns` of the thread's own CPU
 * time it overflows and, with O_ASYNC and F_SETSIG, sends `perf_signum` to that
 * very thread (F_SETOWN_EX), whose handler is the same as for the itimer (ticks.c).
 * User mode only (exclude_kernel), which perf_event_paranoid=2 allows for one's own
 * threads.  Each thread gets its event the first time a capture binds to it.
 *
 * Owns: the period and signal, the failure counts, the number of open events and
 * the lock over them, and every slot's perf_fd.  Never touched by the handler. */
#include "sigprof.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

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

int sp_perf_active(void)
{
    return perf_period_ns != 0;
}

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
        ThreadSlot *s = sp_slot_at(i);
        if (s->perf_fd > 0 && syscall(SYS_tgkill, pid, (pid_t)s->tid, 0) < 0 && errno == ESRCH) {
            perf_close(s);
            perf_open_count--;
        }
    }
}

void sp_perf_cover(ThreadSlot *s, uint64_t tid)
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
PyObject *sp_py_perf_start(PyObject *self, PyObject *args)
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
    uint64_t tid = sp_current_tid();
    ThreadSlot *s = sp_slot_for(tid);
    if (s == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "thread table full");
        return NULL;
    }
    perf_period_ns = period;
    perf_signum = signum;
    perf_failures = 0;
    perf_open_count = 0;
    s->perf_fd = 0;
    sp_perf_cover(s, tid);
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
PyObject *sp_py_perf_stop(PyObject *self, PyObject *args)
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
        ThreadSlot *s = sp_slot_at(i);
        if (s->perf_fd > 0 && !disable)
            close(s->perf_fd - 1);
        else if (s->perf_fd > 0)
            perf_close(s);
        s->perf_fd = 0;
    }
    perf_open_count = 0;
    pthread_mutex_unlock(&perf_lock);
    return PyLong_FromLongLong(perf_failures);
}
