/* One sample: the walk of the guest's frames and the record written into the ring.
 *
 * The walk follows wasmtime's own: the store's VMStoreContext (a repr(C) struct the
 * compiled code uses) holds the frame pointer of the last wasm->host exit
 * trampoline, the PC wasm exited at, and the frame pointer of the host->wasm entry
 * trampoline; Cranelift code always keeps frame pointers, so [fp] / [fp+8] lead
 * from the exit to the entry through exactly the guest frames.  A host function
 * that re-enters the guest pushed the outer activation (capture.c: host_enter), so
 * inner samples continue into it, with a mark for the host function between them
 * and, per guest entry, a mark the Python side replaces with the Python frames that
 * made the call.  A stack equal to the newest stored one is not stored again: the
 * record points at that copy.  Each record also holds the process's resident set
 * (read at most once a millisecond) and the size of the guest memories the profile
 * names.
 *
 * Owns: /proc/self/statm's descriptor, and the ring fields of a Capture (position,
 * stack sharing, memory counters) -- on the thread running the store, or on the
 * sampler thread while the store's thread waits for the GIL.  Never touched by the
 * signal handler. */
#include "sigprof.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* -1: not open. */
static int statm_fd = -1;

void sp_statm_open(void)
{
    if (statm_fd < 0)
        statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
}

void sp_statm_close(void)
{
    if (statm_fd >= 0) {
        close(statm_fd);
        statm_fd = -1;
    }
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

static int exit_trampoline_fp_word, exit_pc_word, entry_fp_word;

PyObject *sp_py_set_store_layout(PyObject *self, PyObject *args)
{
    int words[3];
    (void)self;
    if (!PyArg_ParseTuple(args, "iii", &words[0], &words[1], &words[2]))
        return NULL;
    for (int i = 0; i < 3; i++)
        if (words[i] < 1 || words[i] > 64)
            return PyErr_Format(PyExc_ValueError, "store word %d out of range", words[i]);
    exit_trampoline_fp_word = words[0];
    exit_pc_word = words[1];
    entry_fp_word = words[2];
    Py_RETURN_NONE;
}

/* The current activation as wasmtime recorded it at the last exit to the host. */
int sp_current_activation(Capture *c, Activation *a)
{
    uint64_t tramp_fp = c->vm[exit_trampoline_fp_word];
    a->pc = c->vm[exit_pc_word];
    a->entry_fp = c->vm[entry_fp_word];
    if (tramp_fp == 0 || a->pc == 0 || a->entry_fp == 0 || (tramp_fp & 7)) {
        a->fp = 0;
        return 0;
    }
    a->fp = *(const uint64_t *)(uintptr_t)tramp_fp;     /* the last wasm frame's FP */
    return 1;
}

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
        if (sp_current_activation(c, &a))
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
void sp_record(Capture *c, long long origin, uint64_t total, int how)
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
    if (c->use_tick_record && sp_read_tick(s, &t) && t.count != s->seen) {
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
