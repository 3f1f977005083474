"""zonesim's simulation core: pure NumPy models of the kernel's memory-mapping machinery.

This package imports numpy and the standard library only (no ray, no prometheus_client, no I/O,
no wall clock); ``tests/test_layering.py`` enforces that. Modules follow the kernel subsystems
they model: ``machine`` (the box and its cycle-cost table), ``policy`` (stock / 4g4g /
unmapped), ``events`` (what a workload asks of the kernel), ``mem_map`` and ``page_alloc``
(mm/page_alloc.c), ``highmem`` (mm/highmem.c), ``cache``, ``kmap_kernel`` and ``parisc``
(arch/parisc), ``reference`` (the scalar oracle) and ``fast`` with its ``*_batch`` passes,
``invariants``, ``record``, ``state`` and ``sim`` (a run).
"""

from core.errors import ConfigError, InvariantError, StreamError

__all__ = ["ConfigError", "InvariantError", "StreamError"]
