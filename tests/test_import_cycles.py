"""No import cycles inside gorilix: each module can be read, tested and loaded on its own."""

from __future__ import annotations

import grimp


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def _gorilix_graph(exclude_type_checking_imports: bool) -> grimp.ImportGraph:
    """The graph as the files are now (0.2 s): grimp's cache goes by modification
    times, so it can miss an edit made within the tick of its last read."""
    return grimp.build_graph("gorilix", exclude_type_checking_imports=exclude_type_checking_imports,
                             cache_dir=None)


def test_no_import_cycles_at_run_time() -> None:
    # Imports under TYPE_CHECKING (annotations only) are left out: they never run.
    assert _cycles(_gorilix_graph(exclude_type_checking_imports=True)) == []


def test_no_import_cycles_even_for_annotations() -> None:
    # Imports under TYPE_CHECKING count here: they tie modules together for mypy and for a reader.
    # The node, its control handlers and lifecycle; the worker runtime's parts, its actors and scheduler;
    # the facade, the bridge and the supervisor: each meets the other through Protocols, not imports.
    graph = _gorilix_graph(exclude_type_checking_imports=False)
    assert {"gorilix.node_core", "gorilix.control.actors", "gorilix.workers.cells", "gorilix.system"} <= graph.modules
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.b", imported="p.c")
    assert _cycles(graph) == [["p.a", "p.b"]]
