"""Python's cyclic garbage collector during a run's loop.

By the time a search or a training run starts its loop, the process holds some 420,000 objects
the collector tracks (torch's modules and functions, the compiled space, the network's modules;
darts_cnn's search, measured): all of them live until the run ends. Every full collection walks
them all, about 0.4 s on a 2-core EPYC, and the allocations of a search step start one every few
steps (darts_cnn at batch 16: one in 6 first-order steps of the `fast` memory setting, about 10
ms a step on average; one in 3 `balanced` weight steps, about 90 ms a step, whose saved-tensor
hooks allocate Python objects that live through the forward pass). `frozen_setup` moves what
exists when the loop starts into the collector's permanent generation (`gc.freeze`), so full
collections walk only what the loop itself made: with it, those steps spend 12 ms (first order)
and 20 ms (balanced) a step in the collector. Freezing before DataLoader workers are forked
also keeps the collector from touching, and so copying, the parent's pages in them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_setup() -> Iterator[None]:
    """Within: the objects that exist on entry are not walked by the cyclic collector (module
    docstring); on exit they are handed back to it. Cyclic garbage made before entry is
    collected first. Inside another `frozen_setup` (or any `gc.freeze` not undone), or with the
    collector disabled, it changes nothing."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
