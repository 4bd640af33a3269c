"""Function-level aggregation shared by the text report and the CLI summary.

Input is the neutral form every source can produce: per sample, the
functions on its stack root first (any hashable labels) and a weight.  A
``Recording`` gives ``FunctionRef`` objects and nanoseconds; a Firefox
profile read back gives label tuples and milliseconds -- the arithmetic is
the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Hashable, Iterable, List, Sequence, Tuple


@dataclass
class FunctionTotals:
    label: Hashable
    self_weight: float = 0.0
    total_weight: float = 0.0


@dataclass
class Summary:
    total_weight: float
    samples: int
    functions: List[FunctionTotals]           # every function seen
    hottest_path: List[Tuple[Hashable, float]]  # root -> leaf, following the heaviest child

    def top_self(self, n: int) -> List[FunctionTotals]:
        return sorted(self.functions, key=lambda f: (-f.self_weight, str(f.label)))[:n]

    def top_total(self, n: int) -> List[FunctionTotals]:
        return sorted(self.functions, key=lambda f: (-f.total_weight, str(f.label)))[:n]

    def share(self, weight: float) -> float:
        return 100.0 * weight / self.total_weight if self.total_weight else 0.0


def summarise(stacks: Iterable[Tuple[Sequence[Hashable], float]]) -> Summary:
    totals: Dict[Hashable, FunctionTotals] = {}
    tree: Dict[Tuple, float] = {}
    children: Dict[Tuple, set] = {}
    total = 0.0
    count = 0
    for funcs, weight in stacks:
        count += 1
        total += weight
        if not funcs:
            continue
        leaf = funcs[-1]
        entry = totals.get(leaf)
        if entry is None:
            entry = totals[leaf] = FunctionTotals(leaf)
        entry.self_weight += weight
        for f in set(funcs):          # recursion counts once toward total
            entry = totals.get(f)
            if entry is None:
                entry = totals[f] = FunctionTotals(f)
            entry.total_weight += weight
        prefix: Tuple = ()
        for f in funcs:
            child = prefix + (f,)
            tree[child] = tree.get(child, 0.0) + weight
            children.setdefault(prefix, set()).add(child)
            prefix = child
    path: List[Tuple[Hashable, float]] = []
    node: Tuple = ()
    while node in children:
        node = max(children[node], key=lambda c: (tree[c], str(c[-1])))
        path.append((node[-1], tree[node]))
    return Summary(total, count, list(totals.values()), path)
