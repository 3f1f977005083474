"""``from-strace``: real programs traced with strace at test time, converted and replayed.

Four programs are traced (``tar -cf`` of a directory, ``sort -o`` of a generated file, a short
Python script that writes, reads, forks and runs ``cat``, and one whose threads write and read
files), converted, and replayed on
x86-pae-64g (stock, 4g4g, unmapped) and pa8800 (stock, unmapped) with both engines and the
invariants checked. What the tests expect is derived from the log text by a small parser of their
own (call counts per name, pids, forks, execs, bytes written per fd), not from the converter.

``data/strace_edge.log`` is a hand-written log of the parser's edge cases; its expected counts are
worked out line by line in ``EDGE_KINDS``.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from core import events as E
from core.machine import get_machine, with_overrides
from core.policy import get_policy
from core.record import build_record
from core.sim import simulate
from workloads.strace import Conversion, StraceError, bench_strace, convert

DATA = Path(__file__).resolve().parent / "data"
EDGE = DATA / "strace_edge.log"
STRACE = shutil.which("strace") or "/usr/bin/strace"
SMALL = {"memory": "1GiB"}
RUNS = [("x86-pae-64g", "stock"), ("x86-pae-64g", "4g4g"), ("x86-pae-64g", "unmapped"),
        ("pa8800", "stock"), ("pa8800", "unmapped")]
PROGRAMS = ("tar", "sort", "python", "threads")

SCRIPT = """
import os, subprocess, sys
d = sys.argv[1]
src = os.path.join(d, "in.bin")
with open(src, "wb") as f:
    f.write(bytes(range(256)) * 800)
with open(src, "rb") as f:
    data = f.read()
pid = os.fork()
if pid == 0:
    with open(os.path.join(d, "child.bin"), "wb") as f:
        f.write(data[::-1])
    os._exit(0)
os.waitpid(pid, 0)
out = subprocess.run(["cat", os.path.join(d, "child.bin")], capture_output=True, check=True).stdout
with open(os.path.join(d, "out.bin"), "wb") as f:
    f.write(out)
"""

THREADS = """
import os, sys, threading
def work(i):
    path = os.path.join(sys.argv[1], f"t{i}.bin")
    with open(path, "wb") as f:
        f.write(bytes([i]) * 50_000)
    with open(path, "rb") as f:
        f.read()
threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


# -- tracing real programs ---------------------------------------------------------------------------


def trace(log: Path, argv: list[str], cwd: Path, follow: bool = True) -> Path:
    cmd = [STRACE, *(["-f"] if follow else []), "-tt", "-o", str(log), *argv]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return log


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each program's log, its conversion, and the input files it read."""
    root = tmp_path_factory.mktemp("strace")
    rng = random.Random(7)
    out: dict[str, dict] = {}

    tree = root / "tree"
    tree.mkdir()
    sizes = [300_000, 200_000, 450_000, 123_457]
    for i, size in enumerate(sizes):
        (tree / f"f{i}.bin").write_bytes(rng.randbytes(size))
    log = trace(root / "tar.log", ["tar", "-cf", str(root / "tree.tar"), "tree"], root)
    out["tar"] = {"log": log, "inputs": sizes, "output": (root / "tree.tar").stat().st_size}

    words = "".join(f"{rng.randrange(10**9):09d} {rng.choice(['ab', 'cd', 'ef'])}\n" for _ in range(40_000))
    (root / "words.txt").write_text(words)
    argv = ["sort", "--parallel=1", "-o", str(root / "sorted.txt"), str(root / "words.txt")]  # no threads
    log = trace(root / "sort.log", argv, root)
    out["sort"] = {"log": log, "inputs": [len(words)], "output": len(words)}

    work = root / "py"
    work.mkdir()
    log = trace(root / "python.log", [sys.executable, "-I", "-c", SCRIPT, str(work)], root)
    out["python"] = {"log": log, "inputs": [], "output": 0}

    log = trace(root / "threads.log", [sys.executable, "-I", "-c", THREADS, str(work)], root)
    out["threads"] = {"log": log, "inputs": [], "output": 0}

    for entry in out.values():
        entry["conv"] = convert(str(entry["log"]))
        entry["facts"] = facts(entry["log"])
    return out


# -- the tests' own reading of a log ---------------------------------------------------------------

LINE = re.compile(r"(\d+) +\d\d:\d\d:\d\d\.\d+ (.*)$")


def facts(path: Path) -> dict[str, object]:
    """Per-name counts of completed calls, pids, forks (clones without CLONE_VM), successful
    execs, address spaces (pids less CLONE_VM children that never exec), and the pages each write
    spans at its fd's offset (files opened and written from 0)."""
    calls: Counter[str] = Counter()
    pids: list[str] = []
    pending: dict[str, str] = {}
    forks = execs = write_pages = 0
    shared: set[str] = set()  # CLONE_VM children: threads, vfork children
    exec_ed: set[str] = set()  # pids with a successful execve: a shared child that execs has its own mm
    offsets: Counter[tuple[str, str]] = Counter()
    for raw in path.read_text(errors="replace").splitlines():
        pid, rest = LINE.match(raw).groups()
        if pid not in pids:
            pids.append(pid)
        if rest.startswith(("---", "+++")):
            continue
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[:-len(" <unfinished ...>")]
            continue
        if rest.startswith("<... "):
            name = rest[5:rest.index(" resumed>")]
            text = pending.pop(pid) + rest[rest.index(">") + 1:]
        else:
            name, text = rest[:rest.index("(")], rest
        calls[name] += 1
        ret = text[text.rindex(" = ") + 3:]
        if name in ("clone", "clone3", "fork", "vfork") and not ret.startswith(("-", "?")):
            forks += "CLONE_VM" not in text and name != "vfork"
            if "CLONE_VM" in text or name == "vfork":
                shared.add(ret.split()[0])
        if name == "execve" and ret.startswith("0"):
            execs += 1
            exec_ed.add(pid)  # (a vfork child's execve can be logged before its parent's clone returns)
        if name == "write" and not ret.startswith("-"):
            fd, n = text[6:text.index(",")], int(ret.split()[0])
            off = offsets[pid, fd]
            write_pages += ((off + n - 1) >> 12) - (off >> 12) + 1 if n else 0
            offsets[pid, fd] = off + n
    return {"calls": calls, "pids": pids, "forks": forks, "execs": execs, "mms": len(pids) - len(shared - exec_ed),
            "write_pages": write_pages}


def flagged(conv: Conversion, kind: int, flag: int) -> int:
    return sum(int(((b["kind"] == kind) & (b["order"] == flag)).sum()) for b in conv.batches)


@cache
def machine(name: str):
    return with_overrides(get_machine(name), SMALL)


def replay(conv: Conversion, machine_name: str, policy: str) -> dict[str, object]:
    """Both engines with the invariants checked; their records must be identical."""
    m = machine(machine_name)
    records = [build_record(simulate(m, get_policy(policy, m), conv.stream(m.cpus), engine=engine, check=True), {})
               for engine in ("fast", "reference")]
    assert records[0] == records[1]
    return records[0]


def assert_record_matches(rec: dict[str, object], conv: Conversion) -> None:
    k = conv.kinds
    assert rec["events"] == conv.events == sum(k.values())
    assert rec["alloc_failures"] == 0
    assert rec["allocs"] == sum(k[n] for n in ("alloc_anon", "alloc_pagecache", "alloc_slab", "alloc_stack",
                                                 "alloc_pgtable"))
    assert rec["frees"] == k["free"]
    assert rec["io_requests"] == k["io"]
    assert rec["page_copies"] == k["copy"]
    assert rec["user_accesses"] == k["user"]
    assert (rec["forks"], rec["execs"], rec["exits"]) == (k["fork"], k["exec"], k["exit"])
    assert rec["kmap_calls"] == k["kmap"]
    assert rec["kmap_atomic_calls"] == k["kmap_atomic"]
    assert rec["pte_updates"] == k["pte_update"]
    assert rec["kernel_entries"] == k["syscall"] + k["fork"] + k["exec"] + k["exit"] + k["alloc_anon"]


# -- real programs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("machine_name, policy", RUNS)
@pytest.mark.parametrize("program", PROGRAMS)
def test_real_program_replays_on_every_machine_and_policy(programs, program, machine_name, policy):
    conv = programs[program]["conv"]
    rec = replay(conv, machine_name, policy)
    assert_record_matches(rec, conv)
    assert rec["io_requests"] > 0 and rec["page_copies"] > 0
    if machine_name == "pa8800":
        assert rec["stale_reads"] == 0
        # stock flushes the whole cache on every fork, exec and exit (flush_cache_mm); unmapped
        # flushes user pages as they are freed instead, and never makes an inequivalent alias
        teardowns = rec["forks"] + rec["execs"] + rec["exits"]
        if policy == "stock":
            assert rec["cache_flush_all"] == teardowns and rec["alias_violations"] > 0
        else:
            assert rec["cache_flush_all"] == 0 and rec["alias_violations"] == 0
            assert rec["cache_flush_tmpalias"] > 0


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_line_of_a_real_log_is_converted(programs, program):
    conv, f = programs[program]["conv"], programs[program]["facts"]
    assert conv.skipped == []
    assert Counter(conv.syscalls) + Counter(conv.unknown) == f["calls"]
    assert conv.processes == len(f["pids"])
    assert conv.lines == len(programs[program]["log"].read_text(errors="replace").splitlines())
    k = conv.kinds
    assert k["fork"] == f["forks"]
    assert k["exec"] == f["execs"]
    assert k["exit"] == f["mms"]  # one teardown per address space
    assert f["mms"] == (len(f["pids"]) if program != "threads" else 1)
    # one kernel entry per syscall line: nobody died without an exit line
    assert k["syscall"] + k["fork"] + k["exec"] + k["exit"] == sum(f["calls"].values())
    assert conv.syscalls["read"] > 0 and conv.syscalls["mmap"] > 0
    # max_handles is the high-water mark of live handles plus the margin
    live = peak = 0
    for b in conv.batches:
        delta = E.IS_ALLOC[b["kind"]].astype(np.int64) - (b["kind"] == E.K_FREE)
        run = live + np.cumsum(delta)
        peak = max(peak, int(run.max()))
        live = int(run[-1])
    assert conv.max_handles == peak + 8


@pytest.mark.parametrize("program", ["tar", "sort"])
def test_writes_go_through_the_page_cache_page_by_page(programs, program):
    """Every page a write spans is copied in and written to the device once (write-through);
    every page of the input files is read from the device at least once (the cache starts cold)."""
    p = programs[program]
    conv, f = p["conv"], p["facts"]
    assert f["write_pages"] >= p["output"] // 4096
    assert flagged(conv, E.K_IO, 1) == f["write_pages"]
    assert flagged(conv, E.K_COPY, 1) == f["write_pages"] + f["execs"]  # and execve's copy_strings
    assert flagged(conv, E.K_USER, 0) == f["write_pages"]  # copy_from_user reads the buffer
    assert flagged(conv, E.K_IO, 0) >= sum(-(-size // 4096) for size in p["inputs"])
    assert conv.capped_pages == 0


def test_the_python_script_forks_and_runs_a_child(programs):
    conv, f = programs["python"]["conv"], programs["python"]["facts"]
    assert f["forks"] >= 1 and conv.kinds["fork"] == f["forks"]
    assert conv.processes >= 3  # python, its fork, cat
    assert conv.kinds["exec"] >= 2 and conv.kinds["kmap"] == conv.kinds["exec"]  # copy_strings
    rec = replay(conv, "x86-pae-64g", "stock")
    assert rec["forks"] >= 1


def test_a_log_without_pids_is_one_process(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"x" * 10_000)
    log = trace(tmp_path / "cat.log", ["cat", "a.txt"], tmp_path, follow=False)
    assert re.match(r"\d\d:\d\d:\d\d\.\d+ execve\(", log.read_text())  # no pid column
    conv = convert(str(log))
    assert conv.skipped == [] and conv.processes == 1
    assert conv.kinds["exec"] == 1 and conv.kinds["exit"] == 1
    assert_record_matches(replay(conv, "pa8800", "unmapped"), conv)


# -- the edge-case log -----------------------------------------------------------------------------

EDGE_SYSCALLS = {"execve": 2, "brk": 3, "mmap": 3, "openat": 4, "read": 1, "pread64": 1, "readv": 1, "close": 2,
                 "pwrite64": 1, "clone": 1, "writev": 1, "write": 1, "mremap": 1, "munmap": 2, "exit_group": 2,
                 "wait4": 1, "vfork": 1}

# Worked out line by line (L = line of data/strace_edge.log; pid 100 exists, 101 forks, 102 vforks):
#  L1 pid 100 first seen: task_struct slab, stack, stack page (anon, kmap_atomic, pgtable, pte);
#     execve: exec, new stack page (anon, kmap, copy, kunmap), old mm torn down (2 frees, 1 pte),
#     new mm's pgtable + pte
#  L3 brk grows 3 pages (3 x anon+kmap_atomic+pte, 1 pgtable); L4 mmap 2 anon pages (+1 pgtable)
#  L6 new file: dentry + inode slab pages
#  L7 read 1 page: buffer page fault (+1 pgtable), miss (pagecache, io, buffer_head slab page),
#     kmap_atomic, copy, user; L8 pread64 at 8192 and L9 readv at 4096: a miss each (no new slab page)
#  L10 file mmap 1 page: pagecache + io + pte (+1 pgtable)
#  L13 O_DIRECT pwrite64 of 2 pages: 1 new buffer page; user + io per page
#  L14 frobnicate: unknown, a syscall
#  L16 pid 101 appears before its parent's clone returns: stack, 5 pgtables + 5 ptes copied from
#     the parent's regions (task_struct shares the slab page); L17 the clone returns: fork
#  L20 writev: 1 buffer page fault (+1 pgtable), miss without read, kmap_atomic, user, copy, io;
#     L21 write: a hit, kmap_atomic, user, copy, io
#  L22 malformed; L23 mmap 3 anon (+1 pgtable); L24 mremap moves: 3 frees + 3 ptes, 5 faults (+1
#     pgtable); L25 munmap: 5 frees + 5 ptes
#  L26 exit_group: exit, 1 page + 8 pgtables torn down (8 ptes, 9 frees), stack free
#  L30 brk shrinks 2 pages, L31 munmap 2 pages: 4 frees + 4 ptes
#  L33-35 vfork, pid 102 shares the mm: stack; L35 the execve: exec, stack page (anon, kmap, copy,
#     kunmap), pgtable + pte; L36 killed: exit, 1 page + 1 pgtable torn down, stack free
#  L37 exit_group: exit, 5 pages + 5 pgtables torn down, stack, the task_struct slab page
EDGE_KINDS = {"syscall": 24, "fork": 1, "exec": 2, "exit": 3, "alloc_anon": 19, "alloc_pagecache": 5,
              "alloc_slab": 4, "alloc_stack": 3, "alloc_pgtable": 15, "free": 39, "kmap": 2, "kunmap": 2,
              "kmap_atomic": 22, "pte_update": 52, "io": 8, "copy": 7, "user": 7,
              "irq": 0, "run": 0, "cow": 0}  # strace has no user-mode time or interrupts; forks no COW


def test_edge_log_converts_to_exact_counts():
    conv = convert(str(EDGE))
    assert conv.lines == 39
    assert conv.skipped == [(22, "cannot parse: this line is not strace output")]
    assert conv.syscalls == EDGE_SYSCALLS
    assert conv.unknown == {"frobnicate": 1}
    assert conv.processes == 3
    assert conv.kinds == EDGE_KINDS
    assert conv.events == sum(EDGE_KINDS.values())
    assert conv.capped_pages == 0
    # per-flag counts: the O_DIRECT write and the two buffered writes go to the device
    assert flagged(conv, E.K_IO, 1) == 4 and flagged(conv, E.K_COPY, 1) == 4  # 2 writes + 2 execs
    assert flagged(conv, E.K_FREE, 1) == 2 + 9 + 2 + 10  # teardowns: L1, L26, L36, L37
    # each task on the cpu of its pid's first appearance; pid 102 folds onto cpu 0 of 2 CPUs
    cpus = np.concatenate([b["cpu"] for b in conv.batches])
    assert set(cpus.tolist()) == {0, 1, 2}
    assert int(np.concatenate([b["cpu"] for b in conv.stream(2)]).max()) == 1


def test_edge_log_strict_names_the_malformed_line():
    with pytest.raises(StraceError) as err:
        convert(str(EDGE), strict=True)
    assert str(err.value) == f"{EDGE}:22: cannot parse: this line is not strace output"


@pytest.mark.parametrize("machine_name, policy", RUNS)
def test_edge_log_replays(machine_name, policy):
    conv = convert(str(EDGE))
    assert_record_matches(replay(conv, machine_name, policy), conv)


PREFIX = re.compile(r"^(\d+) (\d\d:\d\d:\d\d\.(\d+)) ", re.M)


@pytest.mark.parametrize("form", ["[pid N]", "-ttt", "no time"])
def test_other_strace_line_prefixes(tmp_path, form):
    text = EDGE.read_text()
    sub = {"[pid N]": r"[pid \1] \2 ", "-ttt": r"\1 1700000000.\3 ", "no time": r"\1 "}[form]
    log = tmp_path / "edge.log"
    log.write_text(PREFIX.sub(sub, text))
    conv = convert(str(log))
    assert conv.kinds == EDGE_KINDS and conv.syscalls == EDGE_SYSCALLS
    assert [n for n, _ in conv.skipped] == [22]


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, where", [
    (b"hello world\nthis is no strace log\n", ":1: not an strace log: cannot parse: hello world"),
    (bytes(range(256)) * 4, ":1: not an strace log"),
    (b"", ": empty strace log"),
    (b"\n  \n", ": empty strace log"),
], ids=["text", "binary", "empty", "blank"])
def test_garbage_is_a_one_line_error(tmp_path, content, where):
    log = tmp_path / "bad.log"
    log.write_bytes(content)
    with pytest.raises(StraceError) as err:
        convert(str(log))
    assert str(err.value).startswith(f"{log}{where}")
    assert "\n" not in str(err.value)


def test_a_missing_log_is_a_one_line_error(tmp_path):
    with pytest.raises(StraceError, match=r"nope\.log: cannot read: No such file"):
        convert(str(tmp_path / "nope.log"))


def test_strict_mode_reports_the_first_bad_line_of_a_real_log(programs, tmp_path):
    lines = programs["tar"]["log"].read_text().splitlines()
    pid = lines[0].split()[0]
    lines.insert(10, f"{pid} 03:12:10.000000 read(3, \"abc\", 3")  # neither a return nor <unfinished ...>
    lines.insert(20, "\x00\x01 garbage")
    log = tmp_path / "tar.log"
    log.write_text("\n".join(lines) + "\n")
    conv = convert(str(log))
    assert [n for n, _ in conv.skipped] == [11, 21]
    with pytest.raises(StraceError, match=rf"tar\.log:11: cannot parse: {pid} 03:12:10"):
        convert(str(log), strict=True)


def mutate(lines: list[str], rng: random.Random) -> list[str]:
    out = list(lines)
    for _ in range(rng.randrange(1, 8)):
        i = rng.randrange(len(out))
        op = rng.randrange(6)
        if op == 0:
            del out[i]
        elif op == 1:
            out.insert(i, out[rng.randrange(len(out))])  # a line repeated elsewhere
        elif op == 2 and i + 1 < len(out):
            out[i], out[i + 1] = out[i + 1], out[i]
        elif op == 3:
            out[i] = out[i][:rng.randrange(len(out[i]) + 1)]  # cut short
        elif op == 4:
            j = rng.randrange(len(out[i]) + 1)
            out[i] = out[i][:j] + rng.choice(["=", "(", ")", " = -1", "<... read resumed>", "+++", "\""]) + out[i][j:]
        else:
            out[i] = out[i].replace("0x7f0000", "0x" + rng.choice(["0", "ffffffffffff", "7f0000"]), 1)
        if not out:
            out = [lines[0]]
    return out


@pytest.mark.parametrize("source", ["edge", "tar"])
def test_corrupted_logs_still_give_valid_streams(programs, tmp_path, source):
    """Whatever a log says (lines lost, repeated, swapped, cut, garbled), the stream the converter
    emits is one the kernel accepts: the simulation neither raises StreamError nor breaks an invariant."""
    base = (EDGE if source == "edge" else programs["tar"]["log"]).read_text().splitlines()
    rng = random.Random(2004)
    for i in range(40):
        log = tmp_path / f"{source}-{i}.log"
        log.write_text("\n".join(mutate(base, rng)) + "\n")
        try:
            conv = convert(str(log))
        except StraceError as err:  # only if no line at all is an strace line
            assert "not an strace log" in str(err)
            continue
        m = machine(("x86-pae-64g", "pa8800")[i % 2])
        simulate(m, get_policy(("stock", "unmapped")[i // 2 % 2], m), conv.stream(m.cpus), engine="fast", check=True)


# -- bounds ----------------------------------------------------------------------------------------


def test_page_cache_is_bounded_and_big_calls_are_capped(tmp_path):
    log = tmp_path / "big.log"
    log.write_text(
        '7 10:00:00.000001 openat(AT_FDCWD, "/big", O_RDONLY) = 3\n'
        '7 10:00:00.000002 read(3, ""..., 1073741824) = 1073741824\n'
        '7 10:00:00.000003 openat(AT_FDCWD, "/big", O_WRONLY|O_TRUNC) = 4\n')
    conv = convert(str(log), pagecache=64 * 1024)  # 16 pages
    assert conv.capped_pages == (1 << 30) // 4096 - 256
    k = conv.kinds
    assert (k["alloc_pagecache"], k["io"], k["copy"], k["user"]) == (256, 256, 256, 256)
    assert k["alloc_anon"] == 1 + 256  # the stack page, then the buffer
    # slabs: task_struct, dentry, inode, one buffer_head page (16 heads at most); reclaim frees 240,
    # O_TRUNC the last 16 and the emptied buffer_head page
    assert k["alloc_slab"] == 4
    assert k["free"] == 240 + 16 + 1
    assert_record_matches(replay(conv, "x86-pae-64g", "unmapped"), conv)


def test_bench_reports_lines_and_events():
    out = bench_strace(str(EDGE))
    assert set(out) == {"lines", "seconds", "lines_per_s", "events"}
    assert out["lines"] == 39 and out["events"] == sum(EDGE_KINDS.values())
    assert out["seconds"] > 0 and out["lines_per_s"] > 0
