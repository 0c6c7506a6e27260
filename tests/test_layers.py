"""The import graph of the package follows one layer order: arrows point down, and nothing imports in a circle.

`LAYERS` is that order, written down once (the README's Layout section describes it): lowest first, each entry a
package or a module. A module belongs to the longest entry that names it or a package above it (a module gets its
own entry where it sits at another height than its package), and may import
only from its own entry and from entries before it. Every import counts, also those inside functions: an import
delayed to run time is still an arrow. The checker itself is tested on a small made-up graph, so a graph with a
back-arrow or a cycle is known to fail.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from rftune._moved import MOVED

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "rftune"

LAYERS = [
    "rftune.errors",             # the errors a user sees
    "rftune.types",              # the records that flow (samples, rollout batches)
    "rftune.registry",           # name -> variant tables filled by decorators
    "rftune.algo",               # pure tensor maths: advantages, losses, the sampler, LoRA merge
    "rftune.evaluation.stats",   # bootstrap intervals, pass@k: plain maths, below everything that reports figures
    "rftune.cpu",                # the CPU speed layer: a backend the core runs without; it knows only the two above
    "rftune.trl_keys",           # TRL's GRPOConfig key names and their rftune keys
    "rftune.constraints",        # structured generation: constraints compiled once, token masks, their replay
    "rftune.config",             # typed configs, checked against the algo registries
    "rftune.runtime",            # cache paths, atomic I/O, run lock, device, distributed, sharding, trackers
    "rftune.repository",         # trained versions and their names
    "rftune.model",              # loading models and tokenizers
    "rftune.rollout",            # the generation interface, its backends, multi-turn episodes
    "rftune.judges",             # LLM judges
    "rftune.sandbox",            # isolated execution of model-written code
    "rftune.rewards",            # the reward interface, its registry, the built-ins
    "rftune.envs",               # environments (the Env protocol, Wordle)
    "rftune.tasks",              # named bundles of data, prompts and rewards; dataset files; held-out splits
    "rftune.evaluation",         # held-out evaluation of a model (the trainer's eval steps use it too)
    "rftune.repository.runs",    # recording training runs and evaluations as versions
    "rftune.train",              # the GRPO and SFT loops, log-probs, checkpoints (they register their runs)
    "rftune.trl",                # TRL's GRPOConfig/GRPOTrainer names over rftune's trainer
    "rftune.repository.export",  # exporting and importing versions
    "rftune.evaluation.report",  # the HTML run report (reads runs from the repository)
    "rftune.structured_requests",  # the structured-output fields of an OpenAI-style request
    "rftune.serve",              # the OpenAI-compatible server
    "rftune.commands",           # one module per CLI command
    "rftune.cli",
    "rftune.__main__",
    "rftune._moved",             # old import paths of moved modules, for one release
    "rftune",                    # the package's lazy top-level exports
    "rftune.testing",            # test fixtures: nothing in the package imports them
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """The package modules that `path` (module `module`) imports, anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # `from a import b` imports module a.b when there is one, else a
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    top = module.split(".")[0]
    return {name for name in found if name.split(".")[0] == top} - {module}


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports, for every module under `root`."""
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    return {module: imports_of(path, module, set(paths)) for module, path in paths.items()}


def layer_of(module: str, layers: list[str]) -> int:
    """Index of the longest entry naming `module` or a package above it (the top package names only itself)."""
    matches = [index for index, entry in enumerate(layers)
               if module == entry or ("." in entry and module.startswith(entry + "."))]
    if not matches:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return max(matches, key=lambda index: len(layers[index]))


def back_arrows(graph: dict[str, set[str]], layers: list[str]) -> list[str]:
    """Every import from a lower entry to a higher one."""
    return [f"{source} -> {target}" for source, targets in sorted(graph.items()) for target in sorted(targets)
            if layer_of(target, layers) > layer_of(source, layers)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan's algorithm), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_graph(graph: dict[str, set[str]], layers: list[str]) -> dict[str, set[str]]:
    """The same arrows between layer entries instead of modules."""
    merged: dict[str, set[str]] = {}
    for source, targets in graph.items():
        entry = layers[layer_of(source, layers)]
        merged.setdefault(entry, set()).update(layers[layer_of(t, layers)] for t in targets)
        merged[entry].discard(entry)
    return merged


def test_the_checker_finds_a_back_arrow_and_a_cycle():
    layers = ["p.low", "p.mid", "p.high"]
    graph = {"p.low.a": {"p.mid.b"}, "p.mid.b": {"p.low.a"}, "p.high.c": {"p.low.a", "p.high.d"},
             "p.high.d": {"p.high.c"}}
    assert back_arrows(graph, layers) == ["p.low.a -> p.mid.b"]
    assert cycles(graph) == [["p.high.c", "p.high.d"], ["p.low.a", "p.mid.b"]]
    assert cycles(layer_graph(graph, layers)) == [["p.low", "p.mid"]]
    assert back_arrows({"p.high.c": {"p.low.a"}, "p.mid.b": {"p.low.a"}}, layers) == []
    with pytest.raises(AssertionError, match="p.other is in no layer"):
        layer_of("p.other", layers)


def test_the_checker_reads_every_kind_of_import(tmp_path):
    root = tmp_path / "p"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from . import b\n")
    (root / "sub" / "b.py").write_text("import os\nfrom p.sub import c\n")
    (root / "sub" / "c.py").write_text("def f():\n    from ..a import x\n")
    (root / "a.py").write_text("import p.sub.b as b\n")
    assert import_graph(root) == {"p": set(), "p.a": {"p.sub.b"}, "p.sub": {"p.sub.b"}, "p.sub.b": {"p.sub.c"},
                                  "p.sub.c": {"p.a"}}


def test_imports_point_down_the_layer_order():
    assert back_arrows(import_graph(PACKAGE), LAYERS) == []


def test_no_module_or_layer_imports_in_a_circle():
    graph = import_graph(PACKAGE)
    assert cycles(graph) == []
    assert cycles(layer_graph(graph, LAYERS)) == []


def test_the_package_imports_no_old_path():
    old = {f"rftune.{name}" for name in MOVED}
    assert {(module, target) for module, targets in import_graph(PACKAGE).items() for target in targets
            if target in old} == set()


def readme_layout_modules(text: str) -> list[str]:
    """The package entries of the README's Layout block, in order, as module names (``algo/`` -> rftune.algo)."""
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    names = []
    for line in block.splitlines():
        match = re.match(r"^  (\S.*?)(?:\s{2,}|$)", line)
        if match:
            for path in match.group(1).split(", "):
                names.append("rftune." + path.removesuffix("/").removesuffix(".py").replace("/", "."))
    return names


def test_the_readme_layout_lists_the_package_in_the_layer_order():
    readme = (PACKAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    order = [layer_of(name, LAYERS) for name in readme_layout_modules(readme)]
    assert order == sorted(order)
    assert {LAYERS[index] for index in order} == set(LAYERS) - {"rftune", "rftune.__main__"}
