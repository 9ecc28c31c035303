"""Process-level settings for running a pipeline in this process (the DirectRunner's workers).

CPython's cyclic garbage collector runs a full collection after enough allocations, and each
one scans every tracked object: Beam's own heap (modules, protos, the pipeline graph) is large,
and a batch job allocates millions of short-lived records, so collections take a third of a
monitor run. ``tune_gc`` moves what exists when the run starts into the permanent generation
(``gc.freeze``) and collects young objects less often. Nothing here changes results.
"""

import gc


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(50_000, second, third)
