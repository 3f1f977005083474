"""The record: one flat dict per run, the same keys for every machine and policy.

Counts come from ``Kernel.c`` and the kmap pool; cycles multiply counts by the machine's cost
table (``Machine.costs``, each entry citing its source), one ``cycles_<mechanism>`` key per line
of the table that the run used, and ``cycles_total`` is their sum. Nothing here knows any
expected figure: it only converts what the engines counted.
"""

from __future__ import annotations

from core.errors import InvariantError
from core.kernel import Kernel

IDENTITY_KEYS = ("machine", "policy", "workload", "seed", "engine")

COUNT_KEYS = (
    "events", "mem_map_bytes", "lowmem_total_bytes", "lowmem_free_min_bytes",
    "highmem_free_min_bytes", "kernel_mapped_bytes_peak", "kernel_mapped_bytes_mean",
    "kernel_mapped_dynamic_bytes_peak",
    "allocs", "alloc_failures", "frees", "ops_on_failed", "kernel_entries", "interrupts", "user_time_ns",
    "forks", "execs", "exits", "fork_ptes_copied", "cow_copies",
    "kmap_calls", "kmap_waits", "kmap_waiters_at_end", "pkmap_wraps", "pkmap_new_mappings",
    "kmap_atomic_calls", "kmap_atomic_maps", "pte_updates", "pte_kmaps", "uaccess_kmaps",
    "kernel_map_pages", "kernel_unmap_pages", "io_requests", "page_copies", "user_accesses",
    "tlb_flush_global", "tlb_flush_local", "tlb_flush_full",
    "alias_violations", "stale_reads", "cache_flush_page", "cache_flush_all", "cache_flush_tmpalias",
    "congruence_exhaustions", "flushes_per_io", "tlb_entries_used",
)

# mechanism -> (count key or callable, cost name). The cost table entries are in core.machine.
CYCLE_KEYS = (
    "cycles_kernel_entry", "cycles_cr3_reload", "cycles_tlb_flush_global", "cycles_tlb_flush_local",
    "cycles_kmap", "cycles_kmap_atomic", "cycles_kmap_wait", "cycles_kernel_map", "cycles_page_alloc",
    "cycles_page_free", "cycles_page_copy", "cycles_cow", "cycles_uaccess", "cycles_irq", "cycles_fork",
    "cycles_fork_ptes", "cycles_exec", "cycles_exit", "cycles_io", "cycles_cache_flush_page",
    "cycles_cache_flush_all", "cycles_cache_flush_tmpalias",
    "cycles_kernel", "cycles_user", "cycles_total",
)

RECORD_KEYS = IDENTITY_KEYS + COUNT_KEYS + CYCLE_KEYS


def counts(k: Kernel) -> dict[str, int | float]:
    """The mechanism counts of a finished run."""
    c, m, pk = k.c, k.machine, k.pk
    page = m.page_size
    # x86 shoots down other CPUs' stale entries lazily; parisc purges each unmap at once (pdtlb).
    lazy = k.policy.map_on_alloc and not k.vi
    lazy_flushes = c.kernel_unmap_pages // k.policy.unmap_flush_batch if lazy else 0
    events = max(c.events, 1)
    return {
        "events": c.events,
        "mem_map_bytes": m.mem_map_bytes,
        "lowmem_total_bytes": k.lowmem_total * page,
        "lowmem_free_min_bytes": c.lowmem_free_min * page,
        "highmem_free_min_bytes": c.highmem_free_min * page,
        "kernel_mapped_bytes_peak": c.kernel_mapped_peak * page,
        "kernel_mapped_bytes_mean": (c.kernel_mapped_sum * page / events if c.events
                                     else k.kernel_mapped() * page),
        # beyond what boot maps for good (the offset map; or mem_map and the image when unmapped)
        "kernel_mapped_dynamic_bytes_peak": (c.kernel_mapped_peak - k.boot_mapped()) * page,
        "allocs": c.allocs,
        "alloc_failures": c.alloc_failures,
        "frees": c.frees,
        "ops_on_failed": c.ops_on_failed,
        "kernel_entries": c.kernel_entries,
        "interrupts": c.interrupts,
        "user_time_ns": c.user_ns,
        "forks": c.forks,
        "execs": c.execs,
        "exits": c.exits,
        "fork_ptes_copied": c.fork_ptes,
        "cow_copies": c.cow_copies,
        "kmap_calls": c.kmap_calls,
        "kmap_waits": pk.waits,
        "kmap_waiters_at_end": len(pk.waiters),
        "pkmap_wraps": pk.wraps,
        "pkmap_new_mappings": pk.new_mappings,
        "kmap_atomic_calls": c.kmap_atomic_calls,
        "kmap_atomic_maps": c.kmap_atomic_maps,
        "pte_updates": c.pte_updates,
        "pte_kmaps": c.pte_kmaps,
        # 4G/4G: user memory is not in the kernel's address space, so copy_to/from_user walks the
        # user page table and maps each user page it copies through kmap_atomic
        "uaccess_kmaps": c.page_copies if k.policy.uaccess_kmap else 0,
        "kernel_map_pages": c.kernel_map_pages,
        "kernel_unmap_pages": c.kernel_unmap_pages,
        "io_requests": c.io_requests,
        "page_copies": c.page_copies,
        "user_accesses": c.user_accesses,
        "tlb_flush_global": pk.wraps + lazy_flushes,
        "tlb_flush_local": c.tlb_flush_local,
        "tlb_flush_full": c.tlb_flush_full,
        "alias_violations": c.alias_violations,
        "stale_reads": k.vi.cache.stale_reads if k.vi else 0,
        "cache_flush_page": c.cache_flush_page,
        "cache_flush_all": c.cache_flush_all,
        "cache_flush_tmpalias": c.cache_flush_tmpalias,
        "congruence_exhaustions": k.vi.exhaustions if k.vi else 0,
        "flushes_per_io": c.io_flushes / c.io_requests if c.io_requests else 0.0,
        "tlb_entries_used": c.tlb_entries_used,
    }


def cycles(k: Kernel, n: dict[str, int]) -> dict[str, int]:
    """Estimated cycles per mechanism: counts times the cost table. ``cycles_kernel`` is their sum;
    ``cycles_total`` adds the user-mode time the stream ran (K_RUN), the wall clock of one CPU."""
    cost = k.machine.cycles
    out = {
        "cycles_kernel_entry": n["kernel_entries"] * cost("kernel_entry"),
        "cycles_cr3_reload": n["tlb_flush_full"] * cost("cr3_reload"),
        "cycles_tlb_flush_global": n["tlb_flush_global"] * cost("tlb_flush_global"),
        "cycles_tlb_flush_local": n["tlb_flush_local"] * cost("tlb_flush_local"),
        "cycles_kmap": (n["pkmap_new_mappings"] * cost("pte_set")
                        + n["pkmap_wraps"] * k.pk.slots * cost("pkmap_flush_scan")),
        "cycles_kmap_atomic": (n["kmap_atomic_maps"] + n["pte_kmaps"]) * cost("pte_set"),
        "cycles_kmap_wait": n["kmap_waits"] * cost("kmap_wait"),
        "cycles_kernel_map": (n["kernel_map_pages"] + n["kernel_unmap_pages"]) * cost("pte_set"),
        "cycles_page_alloc": n["allocs"] * cost("page_alloc"),
        "cycles_page_free": n["frees"] * cost("page_free"),
        "cycles_page_copy": n["page_copies"] * cost("page_copy"),
        "cycles_cow": n["cow_copies"] * cost("page_copy"),
        "cycles_uaccess": n["uaccess_kmaps"] * (cost("pte_set") + cost("tlb_flush_local")),
        "cycles_irq": n["interrupts"] * cost("irq_handler"),
        "cycles_fork": n["forks"] * cost("fork"),
        "cycles_fork_ptes": n["fork_ptes_copied"] * cost("pte_copy"),
        "cycles_exec": n["execs"] * cost("exec"),
        "cycles_exit": n["exits"] * cost("exit"),
        "cycles_io": n["io_requests"] * cost("io_request"),
        "cycles_cache_flush_page": n["cache_flush_page"] * cost("cache_flush_page"),
        "cycles_cache_flush_all": n["cache_flush_all"] * cost("cache_flush_all"),
        "cycles_cache_flush_tmpalias": n["cache_flush_tmpalias"] * cost("cache_flush_tmpalias"),
    }
    out["cycles_kernel"] = sum(out.values())
    out["cycles_user"] = n["user_time_ns"] * k.machine.cpu_mhz // 1000
    out["cycles_total"] = out["cycles_kernel"] + out["cycles_user"]
    return out


def build_record(k: Kernel, identity: dict[str, object]) -> dict[str, object]:
    """The flat record: identity, counts, cycles, in RECORD_KEYS order."""
    n = counts(k)
    rec: dict[str, object] = {key: identity.get(key) for key in IDENTITY_KEYS}
    rec.update(n)
    rec.update(cycles(k, n))
    if tuple(rec) != RECORD_KEYS:
        raise InvariantError("record keys drifted from RECORD_KEYS")
    return rec
