"""What a traced program's system calls mean: each completed call, by name, as the events it
produces on the model (``strace_model``); the file calls are in ``strace_files``, the memory and
process calls here, with the dispatch every call goes through.

Fork, vfork, clone (on the parent's ``= CHILD`` line, or when the child's first line comes first,
  which ``strace -f`` often shows; the pending ``<unfinished ...>`` clone names the flags)
  Without CLONE_VM (fork): K_FORK (dup_mm), and the child gets an mm of its own with the parent's
  page tables and no user pages (``Model.child``); K_FORK's PTE count (addr) is left 0, not yet
  taken from the mm's pages. With CLONE_VM (threads, vfork, posix_spawn) the child shares the mm
  and the call is a K_SYSCALL: there is no dup_mm, and on parisc no flush_cache_mm. CLONE_FILES
  shares the fd table, otherwise it is copied (open file descriptions, and so offsets, stay
  shared, as in the kernel). The first pid seen already exists (strace started it, or attached
  to it); so does any other pid that appears with no clone pending that could have made it.
execve (success)
  K_EXEC; copy_strings fills a new user stack page through kmap (K_ALLOC_ANON at ``STACK_PAGE``,
  K_KMAP, K_COPY into the page, K_KUNMAP); the old mm is dropped (torn down if this was its last
  user); the new mm's stack region gets its PTE page. O_CLOEXEC descriptors are closed.
exit_group / exit / ``+++ exited`` / ``+++ killed`` (whichever comes first)
  The last task leaving an mm tears it down: K_EXIT, then the teardown. Another task leaving
  frees only its stack and task_struct (its exit syscall is then a K_SYSCALL): a thread's exit or
  a vfork child's leaves the mm to its other users.
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
"""

from __future__ import annotations

from collections.abc import Callable

from workloads.layout import PAGE_SHIFT, PTE_SHIFT
from workloads.strace_files import FileCalls
from workloads.strace_log import BadLine, Pending, num, retval
from workloads.strace_model import A_ANON, COPY, EXEC, EXIT, FORK, KMAP, KUNMAP, PTE, STACK_PAGE, S, Task

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

FD_RETURNING = ("socket accept accept4 eventfd eventfd2 epoll_create epoll_create1 timerfd_create signalfd "
                "signalfd4 inotify_init inotify_init1 memfd_create pidfd_open").split()


def _pages(length: int) -> int:
    return (length + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT


class Syscalls(FileCalls):
    """Every call the log completes goes through ``syscall``; ``syscalls`` and ``unknown`` count
    them per name. ``pending`` is the log reader's table of unfinished calls, where a pid that
    appears before its parent's clone has returned finds that clone."""

    def __init__(self, pending: Pending, stack_order: int, pagecache: int, max_pages: int,
                 fault_pages: int) -> None:
        super().__init__(stack_order, pagecache, max_pages, fault_pages)
        self.pending = pending
        self.born: set[str] = set()  # children that appeared before their parent's clone returned
        self.syscalls: dict[str, int] = {}
        self.unknown: dict[str, int] = {}
        self.text = ""  # the call being handled, from its name
        self.names: dict[str, tuple[Callable | None, dict[str, int]]] = {}
        self.handlers: dict[str, Callable[[Task, str, str], None]] = {
            "read": self.io, "pread64": self.pread, "readv": self.io, "preadv": self.pread,
            "preadv2": self.pread2, "write": self.write, "pwrite64": self.pwrite, "writev": self.write,
            "pwritev": self.pwrite, "pwritev2": self.pwrite2,
            "openat": self.openat, "open": self.open, "creat": self.creat, "openat2": self.openat,
            "close": self.close, "close_range": self.close_range, "dup": self.dup, "dup2": self.dup2,
            "dup3": self.dup2, "fcntl": self.fcntl, "lseek": self.lseek,
            "pipe": self.pipe, "pipe2": self.pipe, "socketpair": self.pipe,
            **dict.fromkeys(FD_RETURNING, self.newfd),
            "mmap": self.mmap, "mmap2": self.mmap, "munmap": self.munmap, "mremap": self.mremap,
            "brk": self.brk,
            "clone": self.clone, "clone3": self.clone, "fork": self.clone, "vfork": self.clone,
            "execve": self.execve, "execveat": self.execve, "exit": self.exit, "exit_group": self.exit,
        }

    # -- dispatch --------------------------------------------------------------------------------

    def lookup(self, name: str) -> tuple[Callable | None, dict[str, int]]:
        """A call name's handler (None: its entry alone) and the table that counts it."""
        kind = self.names.get(name)
        if kind is not None:
            return kind
        if not (name.isidentifier() or name == "???"):
            raise BadLine
        handler = self.handlers.get(name)
        kind = self.names[name] = (handler, self.syscalls if handler is not None or name in PLAIN else self.unknown)
        return kind

    def syscall(self, pid: str, name: str, args: str, ret: str, text: str) -> None:
        """The completed call ``text`` (= ``name(args) = ret``) of ``pid``."""
        handler, table = self.lookup(name)
        t = self.tasks.get(pid) or self.task(pid)
        if handler is None:
            self.rows.extend((S, 0, t.cpu, -1, 0))
            table[name] = table.get(name, 0) + 1
            return
        rows = self.rows
        mark = len(rows)
        self.text = text
        try:
            handler(t, args, ret)
        except (ValueError, IndexError) as err:  # the handlers parse everything before they emit
            if len(rows) != mark:
                raise AssertionError(f"strace converter: {name} failed after emitting events") from err
            raise BadLine from None
        table[name] = table.get(name, 0) + 1

    def orphan(self, pid: str, name: str) -> None:
        """The end of a call begun before the log: only its kernel entry is known."""
        t = self.task(pid)
        self.rows.extend((S, 0, t.cpu, -1, 0))
        self.syscalls[name] = self.syscalls.get(name, 0) + 1

    def lost(self, t: Task, name: str) -> None:
        """A call the task entered and never came back from (it was killed): its entry alone."""
        self.rows.extend((S, 0, t.cpu, -1, 0))
        table = self.syscalls if name in self.handlers or name in PLAIN else self.unknown
        table[name] = table.get(name, 0) + 1

    # -- processes -------------------------------------------------------------------------------

    def task(self, pid: str) -> Task:
        """The task of ``pid``: alive already, the child of a clone not returned yet, or (the first
        pid, or one no clone accounts for) a task that existed before the log."""
        t = self.tasks.get(pid)
        if t is not None:
            return t
        if not self.cpus:
            return self.existing(pid)
        for ppid, text in reversed(list(self.pending.clones.items())):  # the latest clone first
            if ppid in self.tasks:
                self.pending[ppid] = text + "\0"  # claimed: one child per clone
                self.born.add(pid)  # the parent's return will name a child that exists already
                return self.child(self.tasks[ppid], pid, text)
        return self.existing(pid)

    def die(self, t: Task, entry: bool) -> None:
        """The task goes: the mm's last user tears it down (K_EXIT); stack and task_struct freed.
        ``entry``: its exit syscall is the kernel entry (K_EXIT, or K_SYSCALL if others share the mm)."""
        last = t.mm.users == 1
        if entry or last:
            self.rows.extend((EXIT if last else S, 0, t.cpu, -1, 0))
        self.release(t)
        self.pending.pop(t.pid, None)

    def clone(self, t: Task, args: str, ret: str) -> None:
        text = self.text
        vm = "CLONE_VM" in args or text.startswith("vfork")
        child = retval(ret) if ret[0] not in "-?" else 0
        if child <= 0:  # failed (or the child's own return, which strace -f does not show)
            self.rows.extend((S, 0, t.cpu, -1, 0))
            return
        self.rows.extend((S if vm else FORK, 0, t.cpu, -1, 0))
        pid = str(child)
        if pid in self.born:
            self.born.discard(pid)
        elif pid not in self.tasks:
            self.child(t, pid, text)

    def execve(self, t: Task, args: str, ret: str) -> None:
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

    def exit(self, t: Task, args: str, ret: str) -> None:
        self.die(t, entry=True)

    # -- memory ----------------------------------------------------------------------------------

    def mmap(self, t: Task, args: str, ret: str) -> None:  # mmap(addr, len, prot, flags, fd, off)
        a = args.split(",")
        n, prot, flags, fd = _pages(num(a[1])), a[2], a[3], num(a[4])
        start = retval(ret) >> PAGE_SHIFT if ret[0] not in "-?" else -1
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

    def munmap(self, t: Task, args: str, ret: str) -> None:
        a = args.split(",")
        start, n = num(a[0]) >> PAGE_SHIFT, _pages(num(a[1]))
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if ret[0] in "-?":
            return
        mm = t.mm
        self.unmap_range(mm, start, n, t.cpu)
        for s in [s for s in mm.maps if start <= s < start + n]:
            del mm.maps[s]

    def mremap(self, t: Task, args: str, ret: str) -> None:  # mremap(old, old_size, new_size, flags..)
        a = args.split(",")
        old, old_n, new_n = num(a[0]) >> PAGE_SHIFT, _pages(num(a[1])), _pages(num(a[2]))
        new = retval(ret) >> PAGE_SHIFT if ret[0] not in "-?" else -1
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

    def brk(self, t: Task, args: str, ret: str) -> None:
        want = num(args)
        got = retval(ret) if ret[0] not in "-?" else -1
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if got < 0:
            return
        mm = t.mm
        old = mm.brk
        mm.brk = got
        if not want or not old or got == old:  # a query, or the first brk: no heap pages yet
            return
        lo, hi = _pages(old), _pages(got)
        if hi > lo:
            self.fault_range(mm, lo, hi - lo, t.cpu, -1)
        else:
            self.unmap_range(mm, hi, lo - hi, t.cpu)
