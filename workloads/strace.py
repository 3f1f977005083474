"""``from-strace``: a real program's ``strace -f -tt`` log turned into an event stream.

strace shows the system calls a program makes, not what the kernel does inside them, so the
conversion is a model, kept simple and following the synthetic workloads' conventions (slab pages,
kernel stacks, PTE pages, kmap_atomic copies, teardown frees). Each choice below says why.

Tasks and address spaces
  Every pid is a task: a task_struct (slab, ``PER_PAGE["task_struct"]`` to a page) and a kernel
  stack (``stack_order``). Tasks run on cpu = the pid's index in order of first appearance (folded
  modulo the machine's CPU count by ``Conversion.stream``). An address space (mm) holds user pages
  keyed by user virtual page number (the event's addr is its low 32 bits, which keeps its cache
  colour) and one PTE page per 2 MiB region it has touched, allocated when the first page of the
  region is faulted. The first pid seen already exists (strace started it, or attached to it):
  its task, stack and an mm holding one user stack page (at ``STACK_PAGE``, just under i386's
  3 GiB) are created before its first line; so is any other pid that appears with no clone
  pending that could have made it.
Fork, vfork, clone (on the parent's ``= CHILD`` line, or when the child's first line comes first,
  which ``strace -f`` often shows; the pending ``<unfinished ...>`` clone names the flags)
  Without CLONE_VM (fork): K_FORK (dup_mm), and the child's mm gets a PTE page for every region of
  the parent's (copy_page_range fills the child's tables) but no user pages: they are shared
  copy-on-write, so the child's later writes (its I/O buffer) fault pages of its own (as new pages:
  no K_COW copy), and K_FORK's PTE count (addr) is left 0, not yet taken from the mm's pages. With
  CLONE_VM (threads, vfork, posix_spawn) the child shares the mm and the call is a K_SYSCALL:
  there is no dup_mm, and on parisc no flush_cache_mm. CLONE_FILES shares the fd table, otherwise
  it is copied (open file descriptions, and so offsets, stay shared, as in the kernel).
execve (success)
  K_EXEC; copy_strings fills a new user stack page through kmap (K_ALLOC_ANON at ``STACK_PAGE``,
  K_KMAP, K_COPY into the page, K_KUNMAP); the old mm is dropped (torn down if this was its last
  user); the new mm's stack region gets its PTE page. O_CLOEXEC descriptors are closed.
exit_group / exit / ``+++ exited`` / ``+++ killed`` (whichever comes first)
  The last task leaving an mm tears it down: K_EXIT, then every user page freed with the teardown
  flag, then every PTE page (K_PTE_UPDATE, K_FREE with the teardown flag: it goes with the address
  space too). Another task leaving frees only its stack and task_struct (its exit syscall is then
  a K_SYSCALL): a thread's exit or a vfork child's leaves the mm to its other users.
Files
  openat/open/creat (success) enter the fd in the task's table with a file identity, the path as
  printed (joined to the directory of a dirfd the table knows; the cwd is not tracked). A new
  identity costs a dentry and an inode (slab), as in mixed. /proc, /sys, /dev paths, directories,
  pipes, sockets and other fds the log never opened have no page cache. O_TRUNC frees the file's
  cached pages. close/close_range/dup*/fcntl(F_DUPFD*, F_SETFD)/lseek keep the table and offsets.
read, pread64, readv, preadv, preadv2 (return r > 0)
  strace prints the data, not the buffer address, so every mm has a buffer region of its own
  (page ``BUF_BASE`` + 512 x (the mm's serial mod 8): one PTE page each, two cache colour sets on
  parisc) whose pages are faulted the first time a call uses them; page j of a call is buffer page j.
  For each file page covered (offset from the fd, or the pread argument; a vector is one
  contiguous buffer): a page-cache hit, or a miss (K_ALLOC_PAGECACHE, K_IO from the device, a
  buffer_head), then K_KMAP_ATOMIC + K_COPY out of the page + K_USER store into the buffer page.
  O_DIRECT: K_IO straight into the buffer page, then the program's K_USER load. No page cache
  (pipes, sockets, ttys, /proc): the K_USER store into the buffer only.
write, pwrite64, writev, pwritev, pwritev2
  The same with K_USER load of the buffer, K_COPY into the page and K_IO to the device at once
  (write-through: the traced programs' sizes make deferred write-back no cheaper to model). A miss
  allocates a page without reading it (an append or whole-page overwrite, the common case).
  O_DIRECT: K_USER store into the buffer, K_IO from it.
  At most ``max_pages`` pages per call (the rest counted in ``capped_pages``), so a 1 GB read does
  not explode. The page cache holds ``pagecache`` bytes; beyond that the oldest page (by insertion:
  FIFO, as mixed's reclaim) is freed (K_FREE, and its buffer_head).
mmap, munmap, mremap, brk
  strace shows no page touches, so a mapping faults at most its first ``fault_pages`` pages when
  it is made (none under PROT_NONE): anonymous ones K_ALLOC_ANON + K_KMAP_ATOMIC (clearing) +
  K_PTE_UPDATE as mixed; file ones K_ALLOC_PAGECACHE at the user address + K_IO from the device
  + K_PTE_UPDATE (the model gives a mapping's file pages to the mapping, not to the read cache).
  A new mapping first drops faulted pages of its range (MAP_FIXED). munmap frees the faulted
  pages of its range (K_FREE, K_PTE_UPDATE); mremap shrinks or grows in place the same way, and a
  move is a free of the old range and faults of the new one (the copy is not modelled). brk
  growth faults up to ``fault_pages`` new heap pages, shrinking frees them.
Everything else
  Every syscall line is one kernel entry: K_FORK, K_EXEC, K_EXIT as above, K_SYSCALL for the rest,
  failed calls (``= -1 EXXX``, ``= ?``) included, with no other effect. Calls in ``PLAIN`` are
  known and modelled by their entry alone; names outside it and the handlers count in ``unknown``.
  Signal lines (``--- SIG... ---``) are not syscalls and are skipped. A line of no known shape is
  malformed: skipped and listed (or ``StraceError`` with ``strict``).

The stream is valid whatever the log says: the converter tracks every handle (page held or not,
kmapped or not) and checks each use, and ``max_handles`` is its exact high-water mark plus 8.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from core import events as E
from core.events import EVENT, Stream
from core.units import MiB
from workloads.base import HandlePool
from workloads.errors import StraceError
from workloads.layout import PAGE_SHIFT, PER_PAGE, PTE_SHIFT

STACK_PAGE = 0xBFFFF  # the user stack's top page, under i386's PAGE_OFFSET
BUF_BASE = 0x7F0000  # read/write buffer region, in pages (2 MiB-aligned)
BUF_STRIDE = 512  # buffer regions of successive mms: a PTE page apart
ADDR_MASK = 0xFFFFFFFF
PAGE_INDEX = (1 << 64) - 1  # page-cache keys are file id << 64 | page index
HANDLE_MARGIN = 8
UNFINISHED = " <unfinished ...>"
NOT_CACHED = ("/proc/", "/sys/", "/dev/")

S, FORK, EXEC, EXIT = E.K_SYSCALL, E.K_FORK, E.K_EXEC, E.K_EXIT
A_ANON, A_CACHE, A_STACK, A_PGT = E.K_ALLOC_ANON, E.K_ALLOC_PAGECACHE, E.K_ALLOC_STACK, E.K_ALLOC_PGTABLE
FREE, KMAP, KUNMAP, KMAP_ATOMIC = E.K_FREE, E.K_KMAP, E.K_KUNMAP, E.K_KMAP_ATOMIC
PTE, IO, COPY, USER = E.K_PTE_UPDATE, E.K_IO, E.K_COPY, E.K_USER

# "PID " or "[pid PID] ", then "HH:MM:SS[.us] " (-t/-tt) or "SECS.us " (-ttt), each optional
PREFIX = re.compile(r"(?:\[pid +(\d+)\] |(\d+) +)?(?:\d+:\d\d:\d\d(?:\.\d+)? +|\d+\.\d+ +)?")
FLAG_SPLIT = re.compile(r"[|,{}=\s]+")

# Known syscalls whose whole model is their kernel entry (K_SYSCALL).
PLAIN = frozenset("""
access faccessat faccessat2 stat lstat fstat newfstatat statx statfs fstatfs readlink readlinkat
getdents getdents64 mprotect madvise mlock munlock msync mincore getpid gettid getppid getuid geteuid
getgid getegid getgroups getresuid getresgid setuid setgid setresuid setresgid getpgrp getpgid setpgid
setsid getsid arch_prctl prctl set_tid_address set_robust_list get_robust_list rseq prlimit64 getrlimit
setrlimit getrandom rt_sigaction rt_sigprocmask rt_sigreturn rt_sigsuspend rt_sigtimedwait sigaltstack
kill tgkill tkill ioctl futex wait4 waitid uname getcwd chdir fchdir umask sysinfo times clock_gettime
clock_getres clock_nanosleep gettimeofday nanosleep time sched_getaffinity sched_setaffinity sched_yield
sched_getparam sched_getscheduler poll ppoll select pselect6 epoll_wait epoll_pwait epoll_ctl connect
bind listen getsockname getpeername getsockopt setsockopt sendto recvfrom sendmsg recvmsg shutdown
unlink unlinkat rename renameat renameat2 mkdir mkdirat rmdir link linkat symlink symlinkat chmod
fchmod fchmodat chown fchown lchown fchownat utime utimes utimensat futimesat truncate ftruncate
fallocate fsync fdatasync sync syncfs flock fadvise64 readahead getxattr lgetxattr fgetxattr listxattr
llistxattr flistxattr setxattr fsetxattr removexattr capget capset personality alarm pause
setitimer getitimer restart_syscall membarrier getcpu ioprio_get ioprio_set statmount mount umount2
pkey_alloc pkey_mprotect sched_getattr sched_setattr getpriority setpriority io_setup io_submit
io_getevents io_destroy io_uring_setup io_uring_enter io_uring_register inotify_add_watch
inotify_rm_watch timerfd_settime timerfd_gettime
""".split())


@dataclass
class Conversion:
    """A converted log: its events in EVENT batches, and what the converter saw.

    ``max_handles``: the high-water mark of live handles plus a margin; ``lines``: lines read;
    ``skipped``: (line number, reason) of malformed lines; ``syscalls``: completed calls per name
    that the model knows (handlers and ``PLAIN``), ``unknown``: the others (each still a kernel
    entry); ``processes``: tasks (pids) created; ``capped_pages``: pages of I/O beyond
    ``max_pages`` per call, left out; ``kinds``: events per kind name (``E.KIND_NAMES``)."""

    batches: list[np.ndarray]
    max_handles: int
    lines: int
    skipped: list[tuple[int, str]]
    syscalls: dict[str, int]
    unknown: dict[str, int]
    processes: int
    path: str = ""
    capped_pages: int = 0
    events: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    params: dict[str, object] = field(default_factory=dict)

    def stream(self, cpus: int) -> Stream:
        """The events for a machine of ``cpus`` CPUs: each task's cpu folded modulo ``cpus``."""
        if cpus < 1:
            raise StraceError(f"strace:{self.path}: cpus must be >= 1 (got {cpus})")
        top = max((int(b["cpu"].max()) for b in self.batches if b.size), default=0)
        batches = self.batches if top < cpus else list(_fold(self.batches, cpus))
        return Stream(batches, self.max_handles, source=f"strace:{self.path}",
                      params={**self.params, "cpus": cpus})


def _fold(batches: list[np.ndarray], cpus: int) -> Iterator[np.ndarray]:
    for b in batches:
        out = b.copy()
        out["cpu"] %= cpus
        yield out


class _Handles(HandlePool):
    """The pool with each handle's state checked: a page held or not (``held``), kmaps outstanding."""

    def __init__(self) -> None:
        super().__init__((1 << 31) - 1)
        self.held = bytearray(1024)
        self.kmapped: dict[int, int] = {}

    def get(self) -> int:
        free = self.free
        if free:
            h = free.pop()
        else:  # HandlePool.get, inlined: the converter takes a handle for most events it emits
            h = self.next
            if h >= self.limit:
                raise RuntimeError("strace converter: handle bound exceeded")
            self.next = h + 1
        held = self.held
        if h >= len(held):
            held.extend(bytes(len(held)))
        if held[h]:
            raise AssertionError(f"strace converter: handle {h} handed out while it holds a page")
        held[h] = 1
        return h

    def put(self, handle: int) -> None:
        if not self.held[handle] or handle in self.kmapped:
            raise AssertionError(f"strace converter: free of handle {handle}, empty or kmapped")
        self.held[handle] = 0
        self.free.append(handle)


class _Slab:
    """A slab cache reduced to its page count: a page per PER_PAGE objects, freed when empty."""

    def __init__(self, name: str, rows: list, hp: _Handles) -> None:
        self.per_page = PER_PAGE[name]
        self.objects = 0
        self.pages: list[int] = []
        self.rows = rows
        self.hp = hp

    def alloc(self, cpu: int) -> None:
        if self.objects == len(self.pages) * self.per_page:
            h = self.hp.get()
            self.pages.append(h)
            self.rows.extend((E.K_ALLOC_SLAB, 0, cpu, h, 0))
        self.objects += 1

    def free(self, cpu: int) -> None:
        self.objects -= 1
        if self.objects <= (len(self.pages) - 1) * self.per_page:
            h = self.pages.pop()
            self.rows.extend((FREE, 0, cpu, h, 0))
            self.hp.put(h)


class _Mm:
    __slots__ = ("users", "pages", "ptes", "maps", "brk", "buf")

    def __init__(self, serial: int) -> None:
        self.users = 1
        self.pages: dict[int, int] = {}  # user page number -> handle
        self.ptes: dict[int, int] = {}  # 2 MiB region -> PTE page handle
        self.maps: dict[int, tuple[int, int]] = {}  # start page -> (pages, file id or -1)
        self.brk = 0
        self.buf = BUF_BASE + (serial % 8) * BUF_STRIDE


class _File:
    """An open file description (shared by dup and fork): file id (-1: no page cache), offset."""

    __slots__ = ("fid", "offset", "direct", "path")

    def __init__(self, fid: int, direct: bool, path: str) -> None:
        self.fid = fid
        self.offset = 0
        self.direct = direct
        self.path = path


class _Fds:
    __slots__ = ("fds", "cloexec")

    def __init__(self, fds: dict[int, _File] | None = None, cloexec: set[int] | None = None) -> None:
        self.fds: dict[int, _File] = fds if fds is not None else {}
        self.cloexec: set[int] = cloexec if cloexec is not None else set()

    def copy(self) -> _Fds:
        return _Fds(dict(self.fds), set(self.cloexec))

    def set(self, fd: int, f: _File, cloexec: bool) -> None:
        self.fds[fd] = f
        if cloexec:
            self.cloexec.add(fd)
        else:
            self.cloexec.discard(fd)

    def close(self, fd: int) -> None:
        self.fds.pop(fd, None)
        self.cloexec.discard(fd)


class _Task:
    __slots__ = ("pid", "cpu", "mm", "files", "stack")

    def __init__(self, pid: str, cpu: int, mm: _Mm, files: _Fds, stack: int) -> None:
        self.pid = pid
        self.cpu = cpu
        self.mm = mm
        self.files = files
        self.stack = stack


CLONES = ("clone(", "clone3(", "fork(", "vfork(")


class _Pending(dict):
    """Unfinished calls by pid, with the unclaimed clones among them kept apart: a new pid looks
    for its parent's clone there, so a log with many pids parked in other calls stays linear."""

    def __init__(self) -> None:
        super().__init__()
        self.clones: dict[str, str] = {}

    def __setitem__(self, pid: str, text: str) -> None:
        super().__setitem__(pid, text)
        if text.startswith(CLONES) and "\0" not in text:
            self.clones[pid] = text
        else:
            self.clones.pop(pid, None)

    def pop(self, pid: str, default: object = None) -> object:
        self.clones.pop(pid, None)
        return super().pop(pid, default)


class _Bad(Exception):
    """A line of no known shape (internal: becomes a skipped line or StraceError)."""


def _num(s: str) -> int:
    try:
        return int(s)  # the common case: a decimal, maybe with spaces around it
    except ValueError:
        pass
    s = s.strip()
    if s == "NULL":
        return 0
    lt = s.find("<")  # -y decorations: 3</etc/passwd>
    if lt > 0:
        s = s[:lt]
    return int(s, 0)


def _ret(ret: str) -> int:
    try:
        return int(ret)
    except ValueError:
        sp = ret.find(" ")
        return _num(ret if sp < 0 else ret[:sp])


def _string(args: str) -> tuple[str, str]:
    """The first quoted string in ``args`` and the text after it."""
    q = args.find('"')
    if q < 0:
        raise ValueError("no string")
    end = q + 1
    while True:
        end = args.find('"', end)
        if end < 0:
            raise ValueError("unterminated string")
        back = 0
        while args[end - 1 - back] == "\\":
            back += 1
        if back % 2 == 0:
            break
        end += 1
    return args[q + 1:end], args[end + 1:]


class _Converter:
    def __init__(self, path: str, strict: bool, stack_order: int, pagecache: int, max_pages: int,
                 fault_pages: int, batch: int) -> None:
        self.path = path
        self.strict = strict
        self.stack_order = stack_order
        self.cache_limit = max(pagecache >> PAGE_SHIFT, 1)
        self.max_pages = max_pages
        self.fault_pages = fault_pages
        self.batch = batch
        self.rows: list[int] = []  # kind, order, cpu, handle, addr of each event, flat (cheapest to convert)
        self.batches: list[np.ndarray] = []
        self.hp = _Handles()
        self.slabs = {name: _Slab(name, self.rows, self.hp) for name in PER_PAGE}
        self.tasks: dict[str, _Task] = {}
        self.cpus: dict[str, int] = {}  # pid -> index of first appearance
        self.pending = _Pending()  # pid -> call text before " <unfinished ...>"
        self.born: set[str] = set()  # children that appeared before their parent's clone returned
        self.files: dict[str, int] = {}  # path -> file id
        self.file_pages: dict[int, set[int]] = {}  # file id -> cached page indices
        self.cache: dict[int, int] = {}  # (file id << 64 | page index) -> handle, oldest first
        self.mm_serial = 0
        self.created = 0
        self.capped = 0
        self.syscalls: dict[str, int] = {}
        self.unknown: dict[str, int] = {}
        self.skipped: list[tuple[int, str]] = []
        self.text = ""  # the call being handled, from its name
        self.names: dict[str, tuple[object, dict[str, int]]] = {}
        self.lines = 0
        self.ignored = 0  # blank lines and strace's own notes
        write = partial(self.io, write=True)
        self.handlers = {
            "read": self.io, "pread64": self.pread, "readv": self.io, "preadv": self.pread,
            "preadv2": self.pread2, "write": write, "pwrite64": self.pwrite, "writev": write,
            "pwritev": self.pwrite, "pwritev2": self.pwrite2,
            "openat": self.openat, "open": self.open, "creat": self.creat, "openat2": self.openat,
            "close": self.close, "close_range": self.close_range, "dup": self.dup, "dup2": self.dup2,
            "dup3": self.dup2, "fcntl": self.fcntl, "lseek": self.lseek,
            "pipe": self.pipe, "pipe2": self.pipe, "socketpair": self.pipe, "socket": self.newfd,
            "accept": self.newfd, "accept4": self.newfd, "eventfd": self.newfd, "eventfd2": self.newfd,
            "epoll_create": self.newfd, "epoll_create1": self.newfd, "timerfd_create": self.newfd,
            "signalfd": self.newfd, "signalfd4": self.newfd, "inotify_init": self.newfd,
            "inotify_init1": self.newfd, "memfd_create": self.newfd, "pidfd_open": self.newfd,
            "mmap": self.mmap, "mmap2": self.mmap, "munmap": self.munmap, "mremap": self.mremap,
            "brk": self.brk,
            "clone": self.clone, "clone3": self.clone, "fork": self.clone, "vfork": self.clone,
            "execve": self.execve, "execveat": self.execve, "exit": self.exit, "exit_group": self.exit,
        }

    # -- handles, pages, slabs -------------------------------------------------------------------

    def flush(self) -> None:
        if self.rows:
            flat = np.fromiter(self.rows, dtype=np.int64, count=len(self.rows)).reshape(-1, 5)
            batch = np.empty(len(flat), dtype=EVENT)
            for j, name in enumerate(EVENT.names):  # kind, order, cpu, handle, addr
                batch[name] = flat[:, j]
            self.batches.append(batch)
            self.rows.clear()

    def fault(self, mm: _Mm, upn: int, cpu: int, fid: int = -1) -> int:
        """A user page at ``upn``: anonymous (zeroed through kmap_atomic) or read from a file."""
        rows = self.rows
        h = self.hp.get()
        if fid < 0:
            rows.extend((A_ANON, 0, cpu, h, upn & ADDR_MASK))
            rows.extend((KMAP_ATOMIC, 0, cpu, h, 0))
        else:
            rows.extend((A_CACHE, 0, cpu, h, upn & ADDR_MASK))
            rows.extend((IO, 0, cpu, h, 0))
        rows.extend((PTE, 0, cpu, self.pte(mm, upn >> PTE_SHIFT, cpu), 0))
        mm.pages[upn] = h
        return h

    def pte(self, mm: _Mm, region: int, cpu: int) -> int:
        p = mm.ptes.get(region)
        if p is None:
            p = mm.ptes[region] = self.hp.get()
            self.rows.extend((A_PGT, 0, cpu, p, 0))
        return p

    def unmap_page(self, mm: _Mm, upn: int, cpu: int) -> None:
        h = mm.pages.pop(upn)
        self.rows.extend((FREE, 0, cpu, h, 0))
        self.rows.extend((PTE, 0, cpu, mm.ptes[upn >> PTE_SHIFT], 0))
        self.hp.put(h)

    def unmap_range(self, mm: _Mm, start: int, n: int, cpu: int) -> None:
        pages = mm.pages
        if not pages or n <= 0:
            return
        if n <= len(pages):
            hits = [u for u in range(start, start + n) if u in pages]
        else:
            end = start + n
            hits = sorted(u for u in pages if start <= u < end)
        for u in hits:
            self.unmap_page(mm, u, cpu)

    def fault_range(self, mm: _Mm, start: int, n: int, cpu: int, fid: int) -> None:
        """Fault the first ``fault_pages`` pages of [start, start + n) not yet present."""
        left = self.fault_pages
        pages = mm.pages
        for u in range(start, start + n):
            if left <= 0:
                return
            if u not in pages:
                self.fault(mm, u, cpu, fid)
                left -= 1

    def new_mm(self) -> _Mm:
        self.mm_serial += 1
        return _Mm(self.mm_serial - 1)

    def teardown(self, mm: _Mm, cpu: int) -> None:
        """The last user left: every user page, then every PTE page, goes with the address space."""
        rows, hp = self.rows, self.hp
        for h in mm.pages.values():
            rows.extend((FREE, 1, cpu, h, 0))
            hp.put(h)
        for p in mm.ptes.values():
            rows.extend((PTE, 0, cpu, p, 0))
            rows.extend((FREE, 1, cpu, p, 0))
            hp.put(p)
        mm.pages.clear()
        mm.ptes.clear()

    def drop_mm(self, mm: _Mm, cpu: int) -> bool:
        mm.users -= 1
        if mm.users:
            return False
        self.teardown(mm, cpu)
        return True

    def new_task(self, pid: str, mm: _Mm, files: _Fds) -> _Task:
        cpu = self.cpus.get(pid)
        if cpu is None:
            cpu = self.cpus[pid] = len(self.cpus) & 0xFFFF
        self.slabs["task_struct"].alloc(cpu)
        stack = self.hp.get()
        self.rows.extend((A_STACK, self.stack_order, cpu, stack, 0))
        t = self.tasks[pid] = _Task(pid, cpu, mm, files, stack)
        self.created += 1
        return t

    def existing(self, pid: str) -> _Task:
        """A task alive before the log starts: its own mm with a user stack page."""
        mm = self.new_mm()
        t = self.new_task(pid, mm, _Fds())
        self.fault(mm, STACK_PAGE, t.cpu)
        return t

    def child(self, parent: _Task, pid: str, flags: str) -> _Task:
        """The child of a clone/fork/vfork of ``parent`` (flags: the call's text)."""
        vm = "CLONE_VM" in flags or flags.startswith("vfork")
        files = parent.files if "CLONE_FILES" in flags else parent.files.copy()
        if vm:
            parent.mm.users += 1
            return self.new_task(pid, parent.mm, files)
        mm = self.new_mm()
        src = parent.mm
        mm.maps = dict(src.maps)
        mm.brk = src.brk
        t = self.new_task(pid, mm, files)
        for region in src.ptes:
            self.rows.extend((PTE, 0, t.cpu, self.pte(mm, region, t.cpu), 0))
        return t

    def task(self, pid: str) -> _Task:
        t = self.tasks.get(pid)
        if t is not None:
            return t
        if not self.cpus:
            return self.existing(pid)
        for ppid, text in reversed(list(self.pending.clones.items())):  # the child of a clone not returned yet
            if ppid in self.tasks:
                self.pending[ppid] = text + "\0"  # claimed: one child per clone
                self.born.add(pid)  # the parent's return will name a child that exists already
                return self.child(self.tasks[ppid], pid, text)
        return self.existing(pid)

    def die(self, t: _Task, entry: bool) -> None:
        """The task goes: the mm's last user tears it down (K_EXIT); stack and task_struct freed.
        ``entry``: its exit syscall is the kernel entry (K_EXIT, or K_SYSCALL if others share the mm)."""
        cpu, rows = t.cpu, self.rows
        last = t.mm.users == 1
        if entry or last:
            rows.extend((EXIT if last else S, 0, cpu, -1, 0))
        self.drop_mm(t.mm, cpu)
        rows.extend((FREE, 0, cpu, t.stack, 0))
        self.hp.put(t.stack)
        self.slabs["task_struct"].free(cpu)
        del self.tasks[t.pid]
        self.pending.pop(t.pid, None)

    # -- the page cache --------------------------------------------------------------------------

    def cached(self, fid: int, key: int, cpu: int, read: bool) -> int:
        """A page-cache miss on ``key`` (file id << 64 | page index): reclaim, then a new page."""
        rows = self.rows
        cache = self.cache
        while len(cache) >= self.cache_limit:  # reclaim the oldest before the new page joins
            old = next(iter(cache))
            self.evict(old, cache.pop(old), cpu)
        h = self.hp.get()
        rows.extend((A_CACHE, 0, cpu, h, 0))
        if read:
            rows.extend((IO, 0, cpu, h, 0))
        self.slabs["buffer_head"].alloc(cpu)
        cache[key] = h
        self.file_pages[fid].add(key & PAGE_INDEX)
        return h

    def evict(self, key: int, h: int, cpu: int) -> None:
        self.rows.extend((FREE, 0, cpu, h, 0))
        self.hp.put(h)
        self.slabs["buffer_head"].free(cpu)
        self.file_pages[key >> 64].discard(key & PAGE_INDEX)

    def truncate(self, fid: int, cpu: int) -> None:
        for idx in sorted(self.file_pages[fid]):
            key = fid << 64 | idx
            self.evict(key, self.cache.pop(key), cpu)

    # -- file I/O --------------------------------------------------------------------------------

    def io(self, t: _Task, args: str, ret: str, write: bool = False, at: int | None = None) -> None:
        """read/write (at None: the fd's offset, advanced) or pread/pwrite at ``at``: the bytes
        between the page cache (or the device, or a kernel buffer for files without a page cache)
        and the task's buffer."""
        comma = args.find(",")
        fd = _num(args[:comma] if comma > 0 else args)
        n = _ret(ret) if ret[0] not in "-?" else 0
        cpu = t.cpu
        ap = self.rows.extend
        ap((S, 0, cpu, -1, 0))
        f = t.files.fds.get(fd)
        if at is None:
            offset = 0
            if f is not None:
                offset = f.offset
                f.offset += max(n, 0)
        else:
            offset = at
        if n <= 0 or not 0 <= offset < 1 << 62:
            return
        first = offset >> PAGE_SHIFT
        pages = ((offset + n - 1) >> PAGE_SHIFT) - first + 1
        if pages > self.max_pages:
            self.capped += pages - self.max_pages
            pages = self.max_pages
        mm = t.mm
        base, user_page = mm.buf, mm.pages.get
        bufs = [user_page(base + j) for j in range(pages)]
        for j, buf in enumerate(bufs):
            if buf is None:
                bufs[j] = self.fault(mm, base + j, cpu)
        if f is None or f.fid < 0:
            flag = 0 if write else 1
            for buf in bufs:
                ap((USER, flag, cpu, buf, 0))
        elif f.direct:
            for buf in bufs:
                if write:
                    ap((USER, 1, cpu, buf, 0))
                    ap((IO, 1, cpu, buf, 0))
                else:
                    ap((IO, 0, cpu, buf, 0))
                    ap((USER, 0, cpu, buf, 0))
        else:
            fid = f.fid
            key = fid << 64 | first
            in_cache = self.cache.get
            for buf in bufs:
                h = in_cache(key)
                if h is None:
                    h = self.cached(fid, key, cpu, not write)
                ap((KMAP_ATOMIC, 0, cpu, h, 0))
                if write:
                    ap((USER, 0, cpu, buf, 0))
                    ap((COPY, 1, cpu, h, 0))
                    ap((IO, 1, cpu, h, 0))
                else:
                    ap((COPY, 0, cpu, h, 0))
                    ap((USER, 1, cpu, buf, 0))
                key += 1

    @staticmethod
    def _last(args: str, back: int = 1) -> int:
        return _num(args.rsplit(",", back)[1])

    def pread(self, t: _Task, args: str, ret: str) -> None:
        self.io(t, args, ret, False, self._last(args))

    def pwrite(self, t: _Task, args: str, ret: str) -> None:
        self.io(t, args, ret, True, self._last(args))

    def pread2(self, t: _Task, args: str, ret: str) -> None:  # preadv2(fd, iov, cnt, offset, flags)
        self.io(t, args, ret, False, self._last(args, 2))

    def pwrite2(self, t: _Task, args: str, ret: str) -> None:
        self.io(t, args, ret, True, self._last(args, 2))

    # -- the fd table ----------------------------------------------------------------------------

    def opened(self, t: _Task, dirfd: str | None, path: str, tail: str, ret: str, creat: bool = False) -> None:
        ok = ret[0] not in "-?"
        fd = _ret(ret) if ok else -1
        relative = not path.startswith("/") and dirfd is not None and dirfd.strip() != "AT_FDCWD"
        d = t.files.fds.get(_num(dirfd)) if relative and dirfd is not None else None
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if not ok:
            return
        flags = set(FLAG_SPLIT.split(tail))
        if d is not None and d.path:
            path = d.path.rstrip("/") + "/" + path
        if path.startswith(NOT_CACHED) or "O_DIRECTORY" in flags:
            fid = -1
        else:
            fid = self.files.get(path, -1)
            if fid < 0:
                fid = self.files[path] = len(self.files)
                self.file_pages[fid] = set()
                self.slabs["dentry"].alloc(t.cpu)
                self.slabs["inode"].alloc(t.cpu)
            elif creat or "O_TRUNC" in flags:
                self.truncate(fid, t.cpu)
        t.files.set(fd, _File(fid, "O_DIRECT" in flags, path), "O_CLOEXEC" in flags)

    def openat(self, t: _Task, args: str, ret: str) -> None:  # openat(dirfd, "path", flags[, mode])
        path, tail = _string(args)
        self.opened(t, args.split(",", 1)[0], path, tail, ret)

    def open(self, t: _Task, args: str, ret: str) -> None:
        path, tail = _string(args)
        self.opened(t, None, path, tail, ret)

    def creat(self, t: _Task, args: str, ret: str) -> None:
        path, _ = _string(args)
        self.opened(t, None, path, "O_WRONLY|O_CREAT|O_TRUNC", ret, creat=True)

    def close(self, t: _Task, args: str, ret: str) -> None:
        fd = _num(args)
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if ret[0] not in "-?":
            t.files.close(fd)

    def close_range(self, t: _Task, args: str, ret: str) -> None:
        a = args.split(",")
        lo, hi = _num(a[0]), _num(a[1])
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if ret[0] in "-?":
            return
        files = t.files
        for fd in [fd for fd in files.fds if lo <= fd <= hi]:
            if "CLOSE_RANGE_CLOEXEC" in args:
                files.cloexec.add(fd)
            else:
                files.close(fd)

    def dup(self, t: _Task, args: str, ret: str) -> None:
        self._dup(t, _num(args), ret, False)

    def dup2(self, t: _Task, args: str, ret: str) -> None:  # dup2(old, new), dup3(old, new, flags)
        self._dup(t, _num(args.split(",", 1)[0]), ret, "O_CLOEXEC" in args)

    def fcntl(self, t: _Task, args: str, ret: str) -> None:
        parts = args.split(",")
        fd, cmd = _num(parts[0]), parts[1].strip()
        if cmd.startswith("F_DUPFD"):
            self._dup(t, fd, ret, cmd == "F_DUPFD_CLOEXEC")
            return
        arg = parts[2] if len(parts) > 2 else ""
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if cmd == "F_SETFD" and ret[0] not in "-?" and fd in t.files.fds:
            if "FD_CLOEXEC" in arg:
                t.files.cloexec.add(fd)
            else:
                t.files.cloexec.discard(fd)

    def _dup(self, t: _Task, fd: int, ret: str, cloexec: bool) -> None:
        new = _ret(ret) if ret[0] not in "-?" else -1
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if new < 0:
            return
        f = t.files.fds.get(fd)
        if f is None:
            t.files.close(new)
        else:
            t.files.set(new, f, cloexec)

    def lseek(self, t: _Task, args: str, ret: str) -> None:
        fd = _num(args.split(",", 1)[0])
        pos = _ret(ret) if ret[0] not in "-?" else -1
        self.rows.extend((S, 0, t.cpu, -1, 0))
        f = t.files.fds.get(fd)
        if pos >= 0 and f is not None:
            f.offset = pos

    def newfd(self, t: _Task, args: str, ret: str) -> None:
        """A call returning an fd with no page cache behind it (socket, eventfd, ...)."""
        fd = _ret(ret) if ret[0] not in "-?" else -1
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if fd >= 0:
            t.files.set(fd, _File(-1, False, ""), "CLOEXEC" in args)

    def pipe(self, t: _Task, args: str, ret: str) -> None:  # pipe([3, 4]), socketpair(.., [3, 4])
        lb, rb = args.rfind("["), args.rfind("]")
        fds = [_num(fd) for fd in args[lb + 1:rb].split(",")] if ret[0] not in "-?" and 0 <= lb < rb else []
        self.rows.extend((S, 0, t.cpu, -1, 0))
        for fd in fds:
            t.files.set(fd, _File(-1, False, ""), "CLOEXEC" in args)

    # -- memory ----------------------------------------------------------------------------------

    @staticmethod
    def _pages(length: int) -> int:
        return (length + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT

    def mmap(self, t: _Task, args: str, ret: str) -> None:  # mmap(addr, len, prot, flags, fd, off)
        a = args.split(",")
        n, prot, flags, fd = self._pages(_num(a[1])), a[2], a[3], _num(a[4])
        start = _ret(ret) >> PAGE_SHIFT if ret[0] not in "-?" else -1
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if start < 0:
            return
        fid = -1
        if "MAP_ANONYMOUS" not in flags:
            f = t.files.fds.get(fd)
            fid = f.fid if f is not None else -1
        mm = t.mm
        self.unmap_range(mm, start, n, t.cpu)
        mm.maps[start] = (n, fid)
        if "PROT_NONE" not in prot:
            self.fault_range(mm, start, n, t.cpu, fid)

    def munmap(self, t: _Task, args: str, ret: str) -> None:
        a = args.split(",")
        start, n = _num(a[0]) >> PAGE_SHIFT, self._pages(_num(a[1]))
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if ret[0] in "-?":
            return
        mm = t.mm
        self.unmap_range(mm, start, n, t.cpu)
        for s in [s for s in mm.maps if start <= s < start + n]:
            del mm.maps[s]

    def mremap(self, t: _Task, args: str, ret: str) -> None:  # mremap(old, old_size, new_size, flags..)
        a = args.split(",")
        old, old_n, new_n = _num(a[0]) >> PAGE_SHIFT, self._pages(_num(a[1])), self._pages(_num(a[2]))
        new = _ret(ret) >> PAGE_SHIFT if ret[0] not in "-?" else -1
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if new < 0:
            return
        mm, cpu = t.mm, t.cpu
        _, fid = mm.maps.pop(old, (old_n, -1))
        if new == old:
            if new_n < old_n:
                self.unmap_range(mm, old + new_n, old_n - new_n, cpu)
            else:
                self.fault_range(mm, old + old_n, new_n - old_n, cpu, fid)
        else:
            self.unmap_range(mm, old, old_n, cpu)
            self.unmap_range(mm, new, new_n, cpu)
            self.fault_range(mm, new, new_n, cpu, fid)
        mm.maps[new] = (new_n, fid)

    def brk(self, t: _Task, args: str, ret: str) -> None:
        want = _num(args)
        got = _ret(ret) if ret[0] not in "-?" else -1
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if got < 0:
            return
        mm = t.mm
        old = mm.brk
        mm.brk = got
        if not want or not old or got == old:
            return
        lo, hi = self._pages(old), self._pages(got)
        if hi > lo:
            self.fault_range(mm, lo, hi - lo, t.cpu, -1)
        else:
            self.unmap_range(mm, hi, lo - hi, t.cpu)

    # -- processes -------------------------------------------------------------------------------

    def clone(self, t: _Task, args: str, ret: str) -> None:
        text = self.text
        vm = "CLONE_VM" in args or text.startswith("vfork")
        child = _ret(ret) if ret[0] not in "-?" else 0
        if child <= 0:  # failed (or the child's own return, which strace -f does not show)
            self.rows.extend((S, 0, t.cpu, -1, 0))
            return
        self.rows.extend((S if vm else FORK, 0, t.cpu, -1, 0))
        pid = str(child)
        if pid in self.born:
            self.born.discard(pid)
        elif pid not in self.tasks:
            self.child(t, pid, text)

    def execve(self, t: _Task, args: str, ret: str) -> None:
        rows, cpu = self.rows, t.cpu
        if ret[0] in "-?":
            rows.extend((S, 0, cpu, -1, 0))
            return
        rows.extend((EXEC, 0, cpu, -1, 0))
        mm = self.new_mm()
        h = self.hp.get()  # copy_strings: argv and envp into the new stack page through kmap
        rows.extend((A_ANON, 0, cpu, h, STACK_PAGE))
        rows.extend((KMAP, 0, cpu, h, 0))
        self.hp.kmapped[h] = 1
        rows.extend((COPY, 1, cpu, h, 0))
        rows.extend((KUNMAP, 0, cpu, h, 0))
        del self.hp.kmapped[h]
        self.drop_mm(t.mm, cpu)
        mm.pages[STACK_PAGE] = h
        rows.extend((PTE, 0, cpu, self.pte(mm, STACK_PAGE >> PTE_SHIFT, cpu), 0))
        t.mm = mm
        files = t.files.copy()  # unshare_files, then the O_CLOEXEC descriptors go
        for fd in files.cloexec:
            files.fds.pop(fd, None)
        files.cloexec.clear()
        t.files = files

    def exit(self, t: _Task, args: str, ret: str) -> None:
        self.die(t, entry=True)

    # -- lines -----------------------------------------------------------------------------------

    def classify(self, name: str) -> tuple[object, dict[str, int]]:
        """A call name's handler (None: its entry alone) and the table that counts it."""
        if not (name.isidentifier() or name == "???"):
            raise _Bad
        handler = self.handlers.get(name)
        kind = (handler, self.syscalls if handler is not None or name in PLAIN else self.unknown)
        self.names[name] = kind
        return kind

    def call(self, pid: str, text: str) -> None:
        """A complete call ``name(args) = ret``; ``text`` starts at the name."""
        p = text.find("(")
        i = text.rfind(" = ")
        if p <= 0 or i < p:
            raise _Bad
        name = text[:p]
        handler, table = self.names.get(name) or self.classify(name)
        head = text[:i].rstrip()
        ret = text[i + 3:].lstrip()
        if head[-1] != ")" or not ret:
            raise _Bad
        t = self.tasks.get(pid) or self.task(pid)
        if handler is None:
            self.rows.extend((S, 0, t.cpu, -1, 0))
            table[name] = table.get(name, 0) + 1
            return
        rows = self.rows
        mark = len(rows)
        self.text = text
        try:
            handler(t, head[p + 1:-1], ret)
        except (ValueError, IndexError) as err:  # the handlers parse everything before they emit
            if len(rows) != mark:
                raise AssertionError(f"strace converter: {name} failed after emitting events") from err
            raise _Bad from None
        table[name] = table.get(name, 0) + 1

    def resumed(self, pid: str, rest: str) -> None:
        """``<... NAME resumed>REST``: completes the call the pid left unfinished."""
        gt = rest.find(" resumed>")
        if gt < 0:
            raise _Bad
        name = rest[5:gt]
        tail = rest[gt + 9:]
        text = self.pending.pop(pid, None)
        if text is not None:
            text = text.split("\0")[0]  # a clone whose child has appeared
        if tail.endswith(UNFINISHED):  # resumed and unfinished again
            self.pending[pid] = (text if text is not None else name + "(") + tail[:-len(UNFINISHED)]
            return
        if text is None or not text.startswith(name + "("):
            if " = " not in tail or not name.isidentifier():
                raise _Bad
            # a call begun before the log (or its start lost): only its kernel entry is known
            t = self.task(pid)
            self.rows.extend((S, 0, t.cpu, -1, 0))
            self.syscalls[name] = self.syscalls.get(name, 0) + 1
            return
        self.call(pid, text + tail.lstrip() if text.endswith("(") else text + tail)

    def ended(self, pid: str) -> None:
        """``+++ exited with N +++``, ``+++ killed by SIG +++``: the task is gone if not already."""
        if pid not in self.tasks and pid in self.cpus:
            return
        t = self.task(pid)
        text = self.pending.pop(pid, None)
        if text is not None:
            text = text.split("\0")[0]
            if text.startswith(("exit(", "exit_group(")):
                self.call(pid, text.rstrip() + ") = ?")
                return
            self.rows.extend((S, 0, t.cpu, -1, 0))  # it entered the kernel and never came back
            name = text[:text.find("(")]
            table = self.syscalls if name in self.handlers or name in PLAIN else self.unknown
            table[name] = table.get(name, 0) + 1
        self.die(t, entry=False)

    def line(self, pid: str, rest: str) -> None:
        """One line after its prefix: a call, an unfinished or resumed call, a signal, an exit."""
        c = rest[0]
        if c == "<":
            if not rest.startswith("<... "):
                raise _Bad
            self.resumed(pid, rest)
        elif c == "-":  # a signal: not a syscall, but the pid's first appearance may be here
            if not (rest.startswith("--- ") and rest.endswith("---")):
                raise _Bad
            if pid not in self.cpus:
                self.task(pid)
        elif c == "+":
            if not (rest.startswith("+++ ") and rest.endswith("+++")):
                raise _Bad
            self.ended(pid)
        elif rest.endswith(UNFINISHED):
            p = rest.find("(")
            if p <= 0:
                raise _Bad
            self.names.get(rest[:p]) or self.classify(rest[:p])
            if pid not in self.tasks:
                self.task(pid)
            self.pending[pid] = rest[:-len(UNFINISHED)]
        else:
            self.call(pid, rest)

    def run(self) -> None:
        match = PREFIX.match
        size = self.batch * 5
        rows = self.rows
        call, line = self.call, self.line
        n = 0
        try:
            fh = open(self.path, encoding="utf-8", errors="replace")
        except OSError as err:
            raise StraceError(f"{self.path}: cannot read: {err.strerror}") from None
        with fh:
            for n, raw in enumerate(fh, 1):
                m = match(raw)
                end = m.end()
                rest = raw[end:].rstrip()
                if not rest:
                    if end:
                        self.bad(n, raw)
                    else:
                        self.ignored += 1
                    continue
                pid = m.group(2) or m.group(1) or "0"
                try:
                    # the common case first: a complete call
                    if rest[0].isalpha() and not rest.endswith(UNFINISHED):
                        call(pid, rest)
                    else:
                        line(pid, rest)
                except (_Bad, ValueError, IndexError):
                    if rest.startswith("strace: "):  # strace's own notes (Process N attached)
                        self.ignored += 1
                    else:
                        self.bad(n, raw)
                if len(rows) >= size:
                    self.flush()
        self.flush()
        self.lines = n

    def bad(self, lineno: int, raw: str) -> None:
        shown = "".join(c if c.isprintable() else "?" for c in raw.rstrip("\r\n")[:60])  # stays one line
        if self.strict:
            raise StraceError(f"{self.path}:{lineno}: cannot parse: {shown}")
        self.skipped.append((lineno, f"cannot parse: {shown}"))


def convert(path: str, strict: bool = False, *, stack_order: int = 1, pagecache: int = 64 * MiB,
            max_pages: int = 256, fault_pages: int = 16, batch: int = 65536) -> Conversion:
    """Convert the ``strace -f -tt`` log at ``path`` (see the module docstring for the model).

    Malformed lines are skipped and listed in ``skipped`` (``strict``: the first raises
    StraceError naming its line). A log in which no line is an strace line raises StraceError."""
    c = _Converter(path, strict, stack_order, pagecache, max_pages, fault_pages, batch)
    c.run()
    if c.lines - c.ignored - len(c.skipped) == 0:  # not one line of strace output
        if not c.skipped:
            raise StraceError(f"{path}: empty strace log")
        first, reason = c.skipped[0]
        raise StraceError(f"{path}:{first}: not an strace log: {reason}")
    counts = np.zeros(E.NKINDS, dtype=np.int64)
    for b in c.batches:
        counts += np.bincount(b["kind"], minlength=E.NKINDS)
    params = {"log": path, "stack_order": stack_order, "pagecache": pagecache, "max_pages": max_pages,
              "fault_pages": fault_pages}
    return Conversion(batches=c.batches, max_handles=c.hp.next + HANDLE_MARGIN, lines=c.lines,
                      skipped=c.skipped, syscalls=c.syscalls, unknown=c.unknown, processes=c.created,
                      path=path, capped_pages=c.capped, events=int(counts.sum()),
                      kinds={name: int(counts[k]) for k, name in enumerate(E.KIND_NAMES)}, params=params)


def bench_strace(path: str) -> dict[str, float | int]:
    """Conversion speed on one log: lines, seconds, lines per second, events."""
    start = time.perf_counter()
    conv = convert(path)
    seconds = time.perf_counter() - start
    return {"lines": conv.lines, "seconds": seconds, "lines_per_s": conv.lines / seconds if seconds else 0.0,
            "events": conv.events}
