"""How much memory a store-less profile holds for stores the application dropped.

    python3 benchmarks/store_retention.py

200 stores made, called once and dropped inside one ``sigprof.profile()``; prints the
growth of the process's resident set (each capture keeps its store until the profile
stops, and its ring's pages count only where written).
"""
import gc

import wasmtime

import sigprof

engine = sigprof.engine()
module = wasmtime.Module(engine, '(module (func (export "run")))')
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
with sigprof.profile() as prof:
    base = rss_mb()
    for i in range(200):
        store = wasmtime.Store(engine)
        wasmtime.Instance(store, module, []).exports(store)["run"](store)
        del store
        gc.collect()
    print(f"RSS grew {rss_mb() - base:.1f} MB over 200 stores made and dropped in a store-less profile")
