"""A Python worker's heap: glibc's threshold above which a block is mapped on its own (given back to the
system when freed) instead of carved from the heap. Imports nothing heavy, so that a test can check its
effect in a fresh process."""
from __future__ import annotations

import ctypes


def heap_threshold(mib: int) -> bool:
    """glibc (Linux): blocks above `mib` MiB are mapped on their own and given back when freed, whatever
    was freed before (glibc's own threshold slides up to the largest block freed, to 32 MiB, after which
    such blocks are carved from the heap, which then grows with the largest call). 0 or no glibc: nothing
    changes. True if the threshold was set."""
    if mib <= 0:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(-3, int(mib) << 20))  # -3: M_MMAP_THRESHOLD
