"""A Python worker's heap: glibc's threshold above which a block is mapped on its own (given back to the
system when freed) instead of carved from the heap, and, as an option, the free pages inside the heap
given back after each call. Imports nothing heavy, so that a test can check their effect in a fresh
process."""
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


def give_back() -> bool:
    """glibc (Linux): the free pages anywhere in the heap given back to the system (malloc_trim(0)). A call's
    blocks under the mmap threshold are carved from the heap, and what a call keeps pins the pages around
    it: without this a worker's peak crept with the number of calls it had run (docs/benchmarks.md, eighth
    step). No glibc: nothing. True if some memory was given back."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.malloc_trim(0))


def trimmed(out, trim: bool):
    """`out`, once the heap's free pages have been given back if `trim` (give_back): wraps a call's result,
    after the call has returned and freed its temporaries."""
    if trim:
        give_back()
    return out
