"""Page and page-table geometry (i386 with PAE, as in Linux 2.6.11) and slab object counts: the
figures both workload models build on, the synthetic world (``world``) and the strace importer
(``strace_model``), kept here so the two cannot drift apart.

The simulated machines may have larger pages (``core.machine``'s ``page_size``); the workloads
still count in 4 KiB pages, as the traced programs' i386 kernel did.
"""

PAGE_SHIFT = 12
PAGE = 1 << PAGE_SHIFT  # bytes per page
PTE_SHIFT = 9  # PTRS_PER_PTE = 512 with PAE (8-byte entries in a 4 KiB page)
PTRS_PER_PTE = 1 << PTE_SHIFT
PTE_SPAN = PAGE * PTRS_PER_PTE  # bytes one PTE page maps: 2 MiB

# objects per 4 KiB slab page (2.6.11 i386 object sizes, rounded)
PER_PAGE = {"dentry": 29, "inode": 7, "buffer_head": 78, "task_struct": 2}
