"""What the file system calls of a traced program do to the model (``strace_model``): the fd table
calls, and read/write and their vector and positioned forms, as the events they produce.

Files
  openat/open/creat (success) enter the fd in the task's table with a file identity, the path as
  printed (joined to the directory of a dirfd the table knows; the cwd is not tracked, so one
  file under two relative spellings is two files). /proc, /sys, /dev paths, directories, pipes,
  sockets and other fds the log never opened have no page cache. O_TRUNC (and creat) frees the
  file's cached pages. close/close_range/dup*/fcntl(F_DUPFD*, F_SETFD)/lseek keep the table and
  offsets.
read, pread64, readv, preadv, preadv2 (return r > 0)
  Page j of a call is page j of the mm's I/O buffer. For each file page covered (offset from the
  fd, or the pread argument; a vector is one contiguous buffer): a page-cache hit, or a miss
  (K_ALLOC_PAGECACHE, K_IO from the device, a buffer_head), then K_KMAP_ATOMIC + K_COPY out of
  the page + K_USER store into the buffer page. O_DIRECT: K_IO straight into the buffer page,
  then the program's K_USER load. No page cache (pipes, sockets, ttys, /proc): the K_USER store
  into the buffer only.
write, pwrite64, writev, pwritev, pwritev2
  The same with K_USER load of the buffer, K_COPY into the page and K_IO to the device at once
  (write-through: the traced programs' sizes make deferred write-back no cheaper to model). A miss
  allocates a page without reading it (an append or whole-page overwrite, the common case).
  O_DIRECT: K_USER store into the buffer, K_IO from it.
  At most ``max_pages`` pages per call (the rest counted in ``capped``), so a 1 GB read does not
  explode.

Each call is first its kernel entry (K_SYSCALL), failed or not; a failed call changes nothing else.
"""

from __future__ import annotations

import re

from workloads.layout import PAGE_SHIFT
from workloads.strace_log import num, quoted, retval
from workloads.strace_model import COPY, IO, KMAP_ATOMIC, USER, File, Model, S, Task

FLAG_SPLIT = re.compile(r"[|,{}=\s]+")
NOT_CACHED = ("/proc/", "/sys/", "/dev/")


def _last(args: str, back: int = 1) -> int:
    """The last argument (``back`` = 2: the one before it), as a number: pread's offset."""
    return num(args.rsplit(",", back)[1])


class FileCalls(Model):
    """The fd-table and I/O handlers: ``handler(task, args, ret)``, args as printed between the
    call's parentheses, ret the return value and what strace prints after it."""

    def __init__(self, stack_order: int, pagecache: int, max_pages: int, fault_pages: int) -> None:
        super().__init__(stack_order, pagecache, fault_pages)
        self.max_pages = max_pages
        self.capped = 0  # pages of I/O beyond max_pages per call, left out

    # -- file I/O --------------------------------------------------------------------------------

    def io(self, t: Task, args: str, ret: str, write: bool = False, at: int | None = None) -> None:
        """read/write (at None: the fd's offset, advanced) or pread/pwrite at ``at``: the bytes
        between the page cache (or the device, or a kernel buffer for files without a page cache)
        and the task's buffer."""
        comma = args.find(",")
        fd = num(args[:comma] if comma > 0 else args)
        n = retval(ret) if ret[0] not in "-?" else 0
        cpu = t.cpu
        self.rows.extend((S, 0, cpu, -1, 0))
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
        bufs = self.buffer(t.mm, pages, cpu)
        if f is None or f.fid < 0:
            ap, flag = self.rows.extend, 0 if write else 1  # copy_from_user loads, copy_to_user stores
            for buf in bufs:
                ap((USER, flag, cpu, buf, 0))
        elif f.direct:
            self.direct(bufs, cpu, write)
        else:
            self.through_cache(f.fid, first, bufs, cpu, write)

    def direct(self, bufs: list[int], cpu: int, write: bool) -> None:
        """O_DIRECT: the device reads or writes the user's buffer page itself."""
        ap = self.rows.extend
        for buf in bufs:
            if write:
                ap((USER, 1, cpu, buf, 0))
                ap((IO, 1, cpu, buf, 0))
            else:
                ap((IO, 0, cpu, buf, 0))
                ap((USER, 0, cpu, buf, 0))

    def through_cache(self, fid: int, first: int, bufs: list[int], cpu: int, write: bool) -> None:
        """Buffered I/O: file page ``first + j`` copied to or from buffer page ``bufs[j]``."""
        ap = self.rows.extend
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

    def write(self, t: Task, args: str, ret: str) -> None:
        self.io(t, args, ret, True)

    def pread(self, t: Task, args: str, ret: str) -> None:
        self.io(t, args, ret, False, _last(args))

    def pwrite(self, t: Task, args: str, ret: str) -> None:
        self.io(t, args, ret, True, _last(args))

    def pread2(self, t: Task, args: str, ret: str) -> None:  # preadv2(fd, iov, cnt, offset, flags)
        self.io(t, args, ret, False, _last(args, 2))

    def pwrite2(self, t: Task, args: str, ret: str) -> None:
        self.io(t, args, ret, True, _last(args, 2))

    # -- the fd table ----------------------------------------------------------------------------

    def opened(self, t: Task, dirfd: str | None, path: str, tail: str, ret: str, creat: bool = False) -> None:
        ok = ret[0] not in "-?"
        fd = retval(ret) if ok else -1
        relative = not path.startswith("/") and dirfd is not None and dirfd.strip() != "AT_FDCWD"
        d = t.files.fds.get(num(dirfd)) if relative and dirfd is not None else None
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if not ok:
            return
        flags = set(FLAG_SPLIT.split(tail))
        if d is not None and d.path:
            path = d.path.rstrip("/") + "/" + path
        if path.startswith(NOT_CACHED) or "O_DIRECTORY" in flags:
            fid = -1
        else:
            fid = self.file_id(path, t.cpu, creat or "O_TRUNC" in flags)
        t.files.set(fd, File(fid, "O_DIRECT" in flags, path), "O_CLOEXEC" in flags)

    def openat(self, t: Task, args: str, ret: str) -> None:  # openat(dirfd, "path", flags[, mode])
        path, tail = quoted(args)
        self.opened(t, args.split(",", 1)[0], path, tail, ret)

    def open(self, t: Task, args: str, ret: str) -> None:
        path, tail = quoted(args)
        self.opened(t, None, path, tail, ret)

    def creat(self, t: Task, args: str, ret: str) -> None:
        path, _ = quoted(args)
        self.opened(t, None, path, "O_WRONLY|O_CREAT|O_TRUNC", ret, creat=True)

    def close(self, t: Task, args: str, ret: str) -> None:
        fd = num(args)
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if ret[0] not in "-?":
            t.files.close(fd)

    def close_range(self, t: Task, args: str, ret: str) -> None:
        a = args.split(",")
        lo, hi = num(a[0]), num(a[1])
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if ret[0] in "-?":
            return
        files = t.files
        for fd in [fd for fd in files.fds if lo <= fd <= hi]:
            if "CLOSE_RANGE_CLOEXEC" in args:
                files.cloexec.add(fd)
            else:
                files.close(fd)

    def dup(self, t: Task, args: str, ret: str) -> None:
        self._dup(t, num(args), ret, False)

    def dup2(self, t: Task, args: str, ret: str) -> None:  # dup2(old, new), dup3(old, new, flags)
        self._dup(t, num(args.split(",", 1)[0]), ret, "O_CLOEXEC" in args)

    def fcntl(self, t: Task, args: str, ret: str) -> None:
        parts = args.split(",")
        fd, cmd = num(parts[0]), parts[1].strip()
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

    def _dup(self, t: Task, fd: int, ret: str, cloexec: bool) -> None:
        new = retval(ret) if ret[0] not in "-?" else -1
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if new < 0:
            return
        f = t.files.fds.get(fd)
        if f is None:
            t.files.close(new)
        else:
            t.files.set(new, f, cloexec)

    def lseek(self, t: Task, args: str, ret: str) -> None:
        fd = num(args.split(",", 1)[0])
        pos = retval(ret) if ret[0] not in "-?" else -1
        self.rows.extend((S, 0, t.cpu, -1, 0))
        f = t.files.fds.get(fd)
        if pos >= 0 and f is not None:
            f.offset = pos

    def newfd(self, t: Task, args: str, ret: str) -> None:
        """A call returning an fd with no page cache behind it (socket, eventfd, ...)."""
        fd = retval(ret) if ret[0] not in "-?" else -1
        self.rows.extend((S, 0, t.cpu, -1, 0))
        if fd >= 0:
            t.files.set(fd, File(-1, False, ""), "CLOEXEC" in args)

    def pipe(self, t: Task, args: str, ret: str) -> None:  # pipe([3, 4]), socketpair(.., [3, 4])
        lb, rb = args.rfind("["), args.rfind("]")
        fds = [num(fd) for fd in args[lb + 1:rb].split(",")] if ret[0] not in "-?" and 0 <= lb < rb else []
        self.rows.extend((S, 0, t.cpu, -1, 0))
        for fd in fds:
            t.files.set(fd, File(-1, False, ""), "CLOEXEC" in args)
