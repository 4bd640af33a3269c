"""A signal handler that notes the tick and bumps the epoch, in native code.

Why: a Python-level handler never runs while wasm runs (DESIGN.md fact 1),
and a relay thread that reacts to the signal needs a CPU and the GIL before it
can bump the epoch -- while the guest runs Python host code it waits up to the
GIL switch interval, so a tick that landed in wasm just before a host call is
charged to the call site.  ``wasmtime_engine_increment_epoch`` is a single
atomic add, async-signal-safe, so the handler can call it directly.

What: about 150 bytes of x86-64 machine code, written at run time into a page
mapped read+write, then made read+execute (never both), and installed with
libc ``sigaction`` (SA_SIGINFO | SA_RESTART | SA_ONSTACK).  Per tick it:

1. bumps ``begin`` (a seqlock: readers retry while begin != count);
2. stores the interrupted instruction pointer (from the ucontext) and the id
   of the interrupted thread (``gettid``: a process-wide timer's signal may
   land in any thread, and a PC from another thread must not be used);
3. stores the profiled thread's CPU clock and CLOCK_MONOTONIC
   (``clock_gettime`` is async-signal-safe; the thread's CPU clock comes from
   ``pthread_getcpuclockid``, so it is right whichever thread took the signal);
4. bumps ``count`` -- the tick counter the sampler compares with;
5. calls ``wasmtime_engine_increment_epoch(engine)`` for each engine.

The tick's own timestamps let a sample that is taken later than its tick (at
a host function's return, say) end its interval at the tick, not at the
sample; the interrupted PC says where the tick landed.

The state lives in a separate read+write page (``TickState``).  The previous
``sigaction`` is saved and restored exactly.  Both pages are mapped once per
process and reused: code a handler might still be executing is never unmapped.

Limits: x86-64 Linux only (elsewhere ``_timer`` falls back to the wakeup-fd
relay); a system that forbids executable anonymous memory also falls back.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import struct
import sys
from typing import List, Optional, Sequence

from wasmtime import _bindings as _b

SA_SIGINFO = 0x00000004
SA_RESTART = 0x10000000
SA_ONSTACK = 0x08000000
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
PAGE = mmap.PAGESIZE


class _Sigaction(ctypes.Structure):
    # glibc's struct sigaction on x86-64: handler, sa_mask (1024 bits), flags, restorer.
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.sigaction.argtypes = [ctypes.c_int, ctypes.POINTER(_Sigaction), ctypes.POINTER(_Sigaction)]

_INCREMENT_EPOCH = ctypes.cast(_b._wasmtime_engine_increment_epoch, ctypes.c_void_p).value
_CLOCK_GETTIME = ctypes.cast(_libc.clock_gettime, ctypes.c_void_p).value
CLOCK_MONOTONIC = 1
_SYS_GETTID = 186   # x86-64
_UC_RIP = 0xA8      # offsetof(ucontext_t, uc_mcontext.gregs[REG_RIP]) in glibc x86-64


class TickState(ctypes.Structure):
    """What the handler writes per tick (see the module docstring)."""

    _fields_ = [("count", ctypes.c_uint64),      # +0  ticks so far (seqlock end)
                ("begin", ctypes.c_uint64),      # +8  seqlock begin
                ("cpu_sec", ctypes.c_int64),     # +16 profiled thread's CPU clock
                ("cpu_nsec", ctypes.c_int64),
                ("wall_sec", ctypes.c_int64),    # +32 CLOCK_MONOTONIC
                ("wall_nsec", ctypes.c_int64),
                ("pc", ctypes.c_uint64),         # +48 interrupted instruction pointer
                ("tid", ctypes.c_uint64)]        # +56 interrupted thread (gettid)


def read_tick(state: TickState):
    """(count, cpu ns, wall ns, pc, tid) of the latest tick, or None if torn thrice."""
    for _ in range(3):
        count = state.count
        cpu = state.cpu_sec * 1_000_000_000 + state.cpu_nsec
        wall = state.wall_sec * 1_000_000_000 + state.wall_nsec
        pc = state.pc
        tid = state.tid
        if state.begin == count:
            return count, cpu, wall, pc, tid
    return None


class NativeUnavailable(RuntimeError):
    pass


def supported() -> bool:
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def _map(prot: int) -> int:
    address = _libc.mmap(None, PAGE, prot, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise NativeUnavailable(f"mmap failed (errno {ctypes.get_errno()})")
    return address


def _code(data: int, cpu_clock: int, engine_addresses: Sequence[int]) -> bytes:
    q = lambda v: struct.pack("<Q", v)                         # noqa: E731
    code = b"\x48\xB9" + q(data)                              # mov rcx, data
    code += b"\xF0\x48\xFF\x41\x08"                           # lock inc qword [rcx+8]  (begin)
    code += b"\x48\x8B\x82" + struct.pack("<I", _UC_RIP)      # mov rax, [rdx+uc_rip]
    code += b"\x48\x89\x41\x30"                               # mov [rcx+48], rax       (pc)
    code += b"\xB8" + struct.pack("<I", _SYS_GETTID)          # mov eax, SYS_gettid
    code += b"\x0F\x05"                                       # syscall (clobbers rcx, r11)
    code += b"\x48\xB9" + q(data)                             # mov rcx, data
    code += b"\x48\x89\x41\x38"                               # mov [rcx+56], rax       (tid)
    code += b"\x48\x83\xEC\x08"                               # sub rsp, 8  (16-byte alignment)
    for clock, offset in ((cpu_clock, 16), (CLOCK_MONOTONIC, 32)):
        code += b"\xBF" + struct.pack("<i", clock)             # mov edi, clockid
        code += b"\x48\xBE" + q(data + offset)                 # mov rsi, &timespec
        code += b"\x48\xB8" + q(_CLOCK_GETTIME)                # mov rax, clock_gettime
        code += b"\xFF\xD0"                                    # call rax
    code += b"\x48\xB9" + q(data)                             # mov rcx, data
    code += b"\xF0\x48\xFF\x01"                               # lock inc qword [rcx]    (count)
    for engine in engine_addresses:
        code += b"\x48\xBF" + q(engine)                        # mov rdi, engine
        code += b"\x48\xB8" + q(_INCREMENT_EPOCH)               # mov rax, increment_epoch
        code += b"\xFF\xD0"                                   # call rax
    code += b"\x48\x83\xC4\x08"                               # add rsp, 8
    code += b"\xC3"                                           # ret
    return code


class _Pages:
    code = 0
    data = 0


def _pages() -> _Pages:
    if not _Pages.code:
        if not supported():
            raise NativeUnavailable(f"no native tick handler for {platform.machine()}")
        _Pages.data = _map(PROT_READ | PROT_WRITE)
        _Pages.code = _map(PROT_READ | PROT_WRITE)
        if _libc.mprotect(_Pages.code, PAGE, PROT_READ | PROT_EXEC) != 0:
            raise NativeUnavailable("executable memory is not allowed here")
    return _Pages


class NativeHandler:
    """Install/uninstall the stub for one signal; ``counter`` counts ticks."""

    def __init__(self) -> None:
        pages = _pages()
        self._pages = pages
        self.state = TickState.from_address(pages.data)
        self.counter = ctypes.c_uint64.from_address(pages.data)
        self._old: Optional[_Sigaction] = None
        self._signum = 0

    def install(self, signum: int, engine_addresses: List[int], cpu_clock: int) -> None:
        """``cpu_clock``: the profiled thread's ``pthread_getcpuclockid``."""
        pages = self._pages
        code = _code(pages.data, cpu_clock, engine_addresses)
        if len(code) > PAGE:
            raise NativeUnavailable("too many engines for one handler page")
        if _libc.mprotect(pages.code, PAGE, PROT_READ | PROT_WRITE) != 0:
            raise NativeUnavailable("cannot make the handler page writable")
        ctypes.memmove(pages.code, code, len(code))
        if _libc.mprotect(pages.code, PAGE, PROT_READ | PROT_EXEC) != 0:
            raise NativeUnavailable("executable memory is not allowed here")
        ctypes.memset(pages.data, 0, ctypes.sizeof(TickState))
        new = _Sigaction()
        new.handler = pages.code
        new.flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK
        old = _Sigaction()
        if _libc.sigaction(signum, ctypes.byref(new), ctypes.byref(old)) != 0:
            raise NativeUnavailable(f"sigaction failed (errno {ctypes.get_errno()})")
        self._old = old
        self._signum = signum

    def current_handler_is_ours(self) -> bool:
        now = _Sigaction()
        _libc.sigaction(self._signum, None, ctypes.byref(now))
        return now.handler == self._pages.code

    def uninstall(self) -> None:
        if self._old is not None:
            _libc.sigaction(self._signum, ctypes.byref(self._old), None)
            self._old = None

    def forget(self) -> None:
        """Drop the saved action without restoring it (someone else's is in place)."""
        self._old = None


def current_disposition(signum: int) -> int:
    """The raw handler address installed for ``signum`` (0 = default, 1 = ignore)."""
    now = _Sigaction()
    _libc.sigaction(signum, None, ctypes.byref(now))
    return now.handler or 0
