"""The state a traced program's system calls act on, as the strace importer models it: tasks, their
address spaces (mm) and fd tables, the page cache, slab caches and the handle of every page, with
the kernel verbs that change them (fault, teardown, reclaim, ...) and the events each verb emits.

Tasks and address spaces
  Every pid is a task: a task_struct (slab, ``PER_PAGE["task_struct"]`` to a page) and a kernel
  stack (``stack_order``). Tasks run on cpu = the pid's index in order of first appearance (folded
  modulo the machine's CPU count by ``Conversion.stream``). An address space (mm) holds user pages
  keyed by user virtual page number (the event's addr is its low 32 bits, which keeps its cache
  colour) and one PTE page per 2 MiB region it has touched, allocated when the first page of the
  region is faulted. A task alive before the log starts has an mm holding one user stack page
  (at ``STACK_PAGE``, just under i386's 3 GiB). A forked child's mm gets a PTE page for every
  region of its parent's (copy_page_range fills its tables) but no user pages: they are shared
  copy-on-write, so its later writes fault pages of its own (new pages: no K_COW copy).
  The last task leaving an mm tears it down: every user page, then every PTE page
  (K_PTE_UPDATE), freed with the teardown flag.
I/O buffers
  strace prints the data a call moves, not the buffer address, so every mm has a buffer region of
  its own (page ``BUF_BASE`` + 512 x (the mm's serial mod 8): one PTE page each, two cache colour
  sets on parisc) whose pages are faulted the first time a call uses them.
The page cache
  Pages keyed by file identity and page index; a miss is K_ALLOC_PAGECACHE (and K_IO from the
  device when read) and a buffer_head. It holds ``pagecache`` bytes; beyond that the oldest page
  (by insertion: FIFO, as mixed's reclaim) is freed (K_FREE, and its buffer_head). A new file
  identity costs a dentry and an inode (slab), as in mixed; truncation frees its cached pages.

Every handle is checked as it is used (a page held or not, kmapped or not), so the stream is
valid whatever the log says, and ``Handles.next`` is the exact high-water mark of live handles.
"""

from __future__ import annotations

import numpy as np

from core import events as E
from core.events import EVENT
from workloads.base import HandlePool
from workloads.layout import PAGE_SHIFT, PER_PAGE, PTE_SHIFT, PTRS_PER_PTE

STACK_PAGE = 0xBFFFF  # the user stack's top page, under i386's PAGE_OFFSET
BUF_BASE = 0x7F0000  # read/write buffer region, in pages (2 MiB-aligned)
BUF_STRIDE = PTRS_PER_PTE  # buffer regions of successive mms: a PTE page apart
ADDR_MASK = 0xFFFFFFFF  # the event's addr field is 32 bits: a user page number's low bits
PAGE_INDEX = (1 << 64) - 1  # page-cache keys are file id << 64 | page index

S, FORK, EXEC, EXIT = E.K_SYSCALL, E.K_FORK, E.K_EXEC, E.K_EXIT
A_ANON, A_CACHE, A_STACK, A_PGT = E.K_ALLOC_ANON, E.K_ALLOC_PAGECACHE, E.K_ALLOC_STACK, E.K_ALLOC_PGTABLE
FREE, KMAP, KUNMAP, KMAP_ATOMIC = E.K_FREE, E.K_KMAP, E.K_KUNMAP, E.K_KMAP_ATOMIC
PTE, IO, COPY, USER = E.K_PTE_UPDATE, E.K_IO, E.K_COPY, E.K_USER


class Handles(HandlePool):
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


class Slab:
    """A slab cache reduced to its page count: a page per PER_PAGE objects, freed when empty."""

    def __init__(self, name: str, rows: list, hp: Handles) -> None:
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


class Mm:
    """An address space: its faulted user pages, PTE pages, mappings, brk and I/O buffer region."""

    __slots__ = ("users", "pages", "ptes", "maps", "brk", "buf")

    def __init__(self, serial: int) -> None:
        self.users = 1
        self.pages: dict[int, int] = {}  # user page number -> handle
        self.ptes: dict[int, int] = {}  # 2 MiB region -> PTE page handle
        self.maps: dict[int, tuple[int, int]] = {}  # start page -> (pages, file id or -1)
        self.brk = 0
        self.buf = BUF_BASE + (serial % 8) * BUF_STRIDE


class File:
    """An open file description (shared by dup and fork): file id (-1: no page cache), offset."""

    __slots__ = ("fid", "offset", "direct", "path")

    def __init__(self, fid: int, direct: bool, path: str) -> None:
        self.fid = fid
        self.offset = 0
        self.direct = direct
        self.path = path


class Fds:
    """A task's fd table: fd -> open file description, and which fds close on exec."""

    __slots__ = ("fds", "cloexec")

    def __init__(self, fds: dict[int, File] | None = None, cloexec: set[int] | None = None) -> None:
        self.fds: dict[int, File] = fds if fds is not None else {}
        self.cloexec: set[int] = cloexec if cloexec is not None else set()

    def copy(self) -> Fds:
        return Fds(dict(self.fds), set(self.cloexec))

    def set(self, fd: int, f: File, cloexec: bool) -> None:
        self.fds[fd] = f
        if cloexec:
            self.cloexec.add(fd)
        else:
            self.cloexec.discard(fd)

    def close(self, fd: int) -> None:
        self.fds.pop(fd, None)
        self.cloexec.discard(fd)


class Task:
    __slots__ = ("pid", "cpu", "mm", "files", "stack")

    def __init__(self, pid: str, cpu: int, mm: Mm, files: Fds, stack: int) -> None:
        self.pid = pid
        self.cpu = cpu
        self.mm = mm
        self.files = files
        self.stack = stack


class Model:
    """All the state, and the kernel verbs on it. Every verb appends its events to ``rows`` (kind,
    order, cpu, handle, addr, flat: the cheapest to build), which ``flush`` turns into batches."""

    def __init__(self, stack_order: int, pagecache: int, fault_pages: int) -> None:
        self.stack_order = stack_order
        self.cache_limit = max(pagecache >> PAGE_SHIFT, 1)
        self.fault_pages = fault_pages
        self.rows: list[int] = []
        self.batches: list[np.ndarray] = []
        self.hp = Handles()
        self.slabs = {name: Slab(name, self.rows, self.hp) for name in PER_PAGE}
        self.tasks: dict[str, Task] = {}
        self.cpus: dict[str, int] = {}  # pid -> index of first appearance
        self.files: dict[str, int] = {}  # path -> file id
        self.file_pages: dict[int, set[int]] = {}  # file id -> cached page indices
        self.cache: dict[int, int] = {}  # (file id << 64 | page index) -> handle, oldest first
        self.mm_serial = 0
        self.created = 0

    def flush(self) -> None:
        if self.rows:
            flat = np.fromiter(self.rows, dtype=np.int64, count=len(self.rows)).reshape(-1, 5)
            batch = np.empty(len(flat), dtype=EVENT)
            for j, name in enumerate(EVENT.names):  # kind, order, cpu, handle, addr
                batch[name] = flat[:, j]
            self.batches.append(batch)
            self.rows.clear()

    # -- user pages and page tables --------------------------------------------------------------

    def fault(self, mm: Mm, upn: int, cpu: int, fid: int = -1) -> int:
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

    def pte(self, mm: Mm, region: int, cpu: int) -> int:
        p = mm.ptes.get(region)
        if p is None:
            p = mm.ptes[region] = self.hp.get()
            self.rows.extend((A_PGT, 0, cpu, p, 0))
        return p

    def unmap_page(self, mm: Mm, upn: int, cpu: int) -> None:
        h = mm.pages.pop(upn)
        self.rows.extend((FREE, 0, cpu, h, 0))
        self.rows.extend((PTE, 0, cpu, mm.ptes[upn >> PTE_SHIFT], 0))
        self.hp.put(h)

    def unmap_range(self, mm: Mm, start: int, n: int, cpu: int) -> None:
        pages = mm.pages
        if not pages or n <= 0:
            return
        if n <= len(pages):  # walk whichever is shorter: the range or the faulted pages
            hits = [u for u in range(start, start + n) if u in pages]
        else:
            end = start + n
            hits = sorted(u for u in pages if start <= u < end)
        for u in hits:
            self.unmap_page(mm, u, cpu)

    def fault_range(self, mm: Mm, start: int, n: int, cpu: int, fid: int) -> None:
        """Fault the first ``fault_pages`` pages of [start, start + n) not yet present."""
        left = self.fault_pages
        pages = mm.pages
        for u in range(start, start + n):
            if left <= 0:
                return
            if u not in pages:
                self.fault(mm, u, cpu, fid)
                left -= 1

    def buffer(self, mm: Mm, pages: int, cpu: int) -> list[int]:
        """The first ``pages`` pages of the mm's I/O buffer, faulted where not present yet."""
        base, user_page = mm.buf, mm.pages.get
        bufs = [user_page(base + j) for j in range(pages)]
        for j, buf in enumerate(bufs):
            if buf is None:
                bufs[j] = self.fault(mm, base + j, cpu)
        return bufs

    # -- address spaces and tasks ----------------------------------------------------------------

    def new_mm(self) -> Mm:
        self.mm_serial += 1
        return Mm(self.mm_serial - 1)

    def teardown(self, mm: Mm, cpu: int) -> None:
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

    def drop_mm(self, mm: Mm, cpu: int) -> bool:
        mm.users -= 1
        if mm.users:
            return False
        self.teardown(mm, cpu)
        return True

    def new_task(self, pid: str, mm: Mm, files: Fds) -> Task:
        cpu = self.cpus.get(pid)
        if cpu is None:
            cpu = self.cpus[pid] = len(self.cpus) & 0xFFFF
        self.slabs["task_struct"].alloc(cpu)
        stack = self.hp.get()
        self.rows.extend((A_STACK, self.stack_order, cpu, stack, 0))
        t = self.tasks[pid] = Task(pid, cpu, mm, files, stack)
        self.created += 1
        return t

    def existing(self, pid: str) -> Task:
        """A task alive before the log starts: its own mm with a user stack page."""
        mm = self.new_mm()
        t = self.new_task(pid, mm, Fds())
        self.fault(mm, STACK_PAGE, t.cpu)
        return t

    def child(self, parent: Task, pid: str, flags: str) -> Task:
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

    def release(self, t: Task) -> None:
        """The task is gone: its share of the mm (the last user's teardown), stack and task_struct."""
        cpu = t.cpu
        self.drop_mm(t.mm, cpu)
        self.rows.extend((FREE, 0, cpu, t.stack, 0))
        self.hp.put(t.stack)
        self.slabs["task_struct"].free(cpu)
        del self.tasks[t.pid]

    # -- the page cache --------------------------------------------------------------------------

    def file_id(self, path: str, cpu: int, truncate: bool) -> int:
        """The identity of the file at ``path``: a new one costs a dentry and an inode;
        ``truncate`` (O_TRUNC, creat) frees the cached pages of a known one."""
        fid = self.files.get(path, -1)
        if fid < 0:
            fid = self.files[path] = len(self.files)
            self.file_pages[fid] = set()
            self.slabs["dentry"].alloc(cpu)
            self.slabs["inode"].alloc(cpu)
        elif truncate:
            self.truncate(fid, cpu)
        return fid

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
