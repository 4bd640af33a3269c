"""Function-level aggregation shared by the text report and the CLI summary.

Input is the neutral form every source can produce: a stack prefix tree with
a function label per node, and per sample its node and weight.  A
``Recording`` gives ``FunctionRef`` labels and nanoseconds; a Firefox profile
read back gives label tuples and milliseconds -- the arithmetic is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Iterable, List, Sequence, Tuple

from .frames import FunctionRef

if TYPE_CHECKING:
    from .recording import Recording


@dataclass
class FunctionTotals:
    function: FunctionRef
    self_weight: float = 0.0
    total_weight: float = 0.0


@dataclass
class Summary:
    total_weight: float
    samples: int
    functions: List[FunctionTotals]           # every function seen
    hottest_path: List[Tuple[FunctionRef, float]]  # root -> leaf, following the heaviest child

    def top_self(self, n: int) -> List[FunctionTotals]:
        return sorted(self.functions, key=lambda f: (-f.self_weight, str(f.function)))[:n]

    def top_total(self, n: int) -> List[FunctionTotals]:
        return sorted(self.functions, key=lambda f: (-f.total_weight, str(f.function)))[:n]

    def share(self, weight: float) -> float:
        return 100.0 * weight / self.total_weight if self.total_weight else 0.0


@dataclass
class FunctionTree:
    """Stacks at function level: one node per distinct path of functions."""

    label: List[FunctionRef]      # node -> its function
    parent: List[int]             # node -> parent node, -1 for a root (parents come first)
    self_weight: List[float]      # weight of the samples whose stack ends at the node
    weight: List[float]           # weight of the node's subtree
    children: List[List[int]]     # sampled children, in order of first appearance
    roots: List[int]              # sampled roots, likewise
    total_weight: float           # every sample's, stack or not
    samples: int


def function_tree(parents: Sequence[int], labels: Sequence[FunctionRef],
                  samples: Iterable[Tuple[int, float]]) -> FunctionTree:
    """Merge a frame-level prefix tree into a function-level one, with weights.

    The stacks are a prefix tree: node ``i`` has parent ``parents[i]`` (-1 for a
    root, always less than ``i``) and its frame's function ``labels[i]``;
    ``samples`` gives each sample's node (-1: no stack) and weight.  Frames of
    one function under one parent are merged, so the work is linear in the
    tree's size plus the samples, whatever the depth.  Nodes no sample passes
    through are left out of ``children`` and ``roots``.
    """
    fn_parent: List[int] = []
    fn_label: List[FunctionRef] = []
    fn_index: Dict[Tuple[int, FunctionRef], int] = {}
    of_node: List[int] = []
    for parent, label in zip(parents, labels):
        key = (of_node[parent] if parent >= 0 else -1, label)
        node = fn_index.get(key)
        if node is None:
            node = fn_index[key] = len(fn_label)
            fn_parent.append(key[0])
            fn_label.append(label)
        of_node.append(node)
    at = [0.0] * len(fn_label)
    hits = [0] * len(fn_label)
    total = 0.0
    count = 0
    for node, weight in samples:
        count += 1
        total += weight
        if node >= 0:
            at[of_node[node]] += weight
            hits[of_node[node]] += 1
    below = list(at)                       # weight of each node's subtree
    children: List[List[int]] = [[] for _ in fn_label]
    roots: List[int] = []
    for node in range(len(fn_label) - 1, -1, -1):
        parent = fn_parent[node]
        if parent >= 0:
            below[parent] += below[node]
            hits[parent] += hits[node]
        if not hits[node]:
            continue                       # on no sample's stack
        if parent >= 0:
            children[parent].append(node)
        else:
            roots.append(node)
    for listed in children:
        listed.reverse()
    roots.reverse()
    return FunctionTree(fn_label, fn_parent, at, below, children, roots, total, count)


def summarise(tree: FunctionTree) -> Summary:
    """Self and total weight per function, and the hottest path.  A function that
    recurses counts once toward its total."""
    fn_label, at, below = tree.label, tree.self_weight, tree.weight
    children, roots = tree.children, tree.roots
    totals: Dict[FunctionRef, FunctionTotals] = {}

    def entry(label: FunctionRef) -> FunctionTotals:
        found = totals.get(label)
        if found is None:
            found = totals[label] = FunctionTotals(label)
        return found

    for node, weight in enumerate(at):
        if weight:
            entry(fn_label[node]).self_weight += weight
    # Totals: each node's subtree counts for its function unless an ancestor is the
    # same function (then that ancestor's subtree already holds it).
    open_count: Dict[FunctionRef, int] = {}
    stack: List[Tuple[int, bool]] = [(r, True) for r in roots]
    while stack:
        node, entering = stack.pop()
        label = fn_label[node]
        if entering:
            if not open_count.get(label):
                entry(label).total_weight += below[node]
            open_count[label] = open_count.get(label, 0) + 1
            stack.append((node, False))
            stack.extend((c, True) for c in children[node])
        else:
            open_count[label] -= 1
    path: List[Tuple[FunctionRef, float]] = []
    level = roots
    while level:
        node = max(level, key=lambda c: (below[c], str(fn_label[c])))
        path.append((fn_label[node], below[node]))
        level = children[node]
    return Summary(tree.total_weight, tree.samples, list(totals.values()), path)


def recording_tree(rec: "Recording") -> FunctionTree:
    """``function_tree`` of a ``Recording``'s own stacks, by ``FunctionRef``."""
    labels = [rec.function(frame) for frame in rec.stack_frame]
    return function_tree(rec.stack_parent, labels, zip(rec.sample_table.stack, rec.weights_ns()))


def summarise_recording(rec: "Recording") -> Summary:
    return summarise(recording_tree(rec))
