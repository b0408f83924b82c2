#!/usr/bin/env python3
"""Lists import cycles between the files of a Rust crate.

    python3 tools/import_cycles.py src src/bin/trace-writer python/src

Each `use crate::…`, `use super::…` and `use self::…` path (brace groups
expanded) is resolved to the file that defines the item: the deepest module
file on the path, and, where that is a `mod.rs` or `lib.rs` that re-exports
the item from a child module (`pub(crate) use child::Item`), that child's
file. A file's own submodules (`mod x;`) and its re-exports (`pub use`) are
not imports of its own. Exits 1 and prints
each cycle if any two files reach each other through their `use` lines.
"""

from __future__ import annotations

import pathlib
import re
import sys

USE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.M)


def expand(tree: str) -> list[list[str]]:
    """`a::{b, c::{d, self}}` -> [[a, b], [a, c, d], [a, c]]."""
    # `Item as Alias` keeps the item; then no whitespace is left to matter.
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    out: list[list[str]] = []

    def walk(prefix: list[str], s: str) -> None:
        if "{" not in s:
            parts = [p for p in s.split("::") if p]
            if parts and parts[-1] == "self":
                parts = parts[:-1]
            if parts and parts[-1] == "*":
                parts = parts[:-1]
            out.append(prefix + parts)
            return
        head, rest = s.split("{", 1)
        body = rest[: rest.rindex("}")]
        head_parts = [p for p in head.split("::") if p]
        depth, item, items = 0, "", []
        for ch in body:
            if ch == "," and depth == 0:
                items.append(item)
                item = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            item += ch
        items.append(item)
        for it in items:
            if it:
                walk(prefix + head_parts, it)

    walk([], tree)
    return out


class Crate:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        # A binary under bin/ is a crate of its own: list it as a root.
        self.files = {
            p.resolve()
            for p in root.rglob("*.rs")
            if "bin" not in p.relative_to(root).parts[:-1]
        }

    def module_of(self, path: pathlib.Path) -> list[str]:
        rel = path.relative_to(self.root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        return parts

    def file_of(self, module: list[str]) -> pathlib.Path | None:
        if not module:
            for name in ("lib.rs", "main.rs"):
                if (self.root / name).resolve() in self.files:
                    return (self.root / name).resolve()
            return None
        base = self.root.joinpath(*module)
        for cand in (base.with_suffix(".rs"), base / "mod.rs"):
            if cand.resolve() in self.files:
                return cand.resolve()
        return None

    def reexports(self, file: pathlib.Path) -> dict[str, list[str]]:
        """Items a module file re-exports from its children: name -> child module path."""
        found: dict[str, list[str]] = {}
        module = self.module_of(file)
        for m in USE.finditer(file.read_text()):
            if not m.group(0).lstrip().startswith("pub"):
                continue
            for path in expand(m.group(1)):
                if not path:
                    continue
                if path[0] == "crate":
                    child = path[1:-1]
                elif path[0] == "self":
                    child = module + path[1:-1]
                elif path[0] not in ("super", "std", "core"):
                    child = module + path[:-1]
                else:
                    continue
                if len(child) > len(module):
                    found[path[-1]] = child
        return found

    def resolve(self, file: pathlib.Path, path: list[str]) -> pathlib.Path | None:
        here = self.module_of(file)
        if not path:
            return None
        if path[0] == "crate":
            absolute = path[1:]
        elif path[0] == "super":
            absolute = here[:]
            while path and path[0] == "super":
                absolute, path = absolute[:-1], path[1:]
            absolute = absolute + path
        elif path[0] == "self":
            absolute = here + path[1:]
        elif self.file_of(here + path[:1]) is not None:
            # A child module named without `self::` (2018 paths).
            absolute = here + path
        else:
            return None
        # The deepest module file on the path, then through re-exports.
        for cut in range(len(absolute), -1, -1):
            target = self.file_of(absolute[:cut])
            if target is None:
                continue
            if cut < len(absolute):
                child = self.reexports(target).get(absolute[cut])
                if child:
                    deeper = self.file_of(child)
                    if deeper is not None:
                        return deeper
            return target
        return None

    def edges(self) -> dict[pathlib.Path, set[pathlib.Path]]:
        graph: dict[pathlib.Path, set[pathlib.Path]] = {f: set() for f in self.files}
        for f in self.files:
            text = re.sub(r"(?s)#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", f.read_text())
            for m in USE.finditer(text):
                if m.group(0).lstrip().startswith("pub"):
                    # A re-export names the module's surface; whoever uses
                    # the item is resolved to its defining file instead.
                    continue
                for path in expand(m.group(1)):
                    target = self.resolve(f, path)
                    if target is not None and target != f:
                        graph[f].add(target)
        return graph


def cycles(graph: dict[pathlib.Path, set[pathlib.Path]]) -> list[list[pathlib.Path]]:
    """Strongly connected components of more than one file (Tarjan)."""
    index: dict[pathlib.Path, int] = {}
    low: dict[pathlib.Path, int] = {}
    stack: list[pathlib.Path] = []
    on: set[pathlib.Path] = set()
    out: list[list[pathlib.Path]] = []
    counter = [0]

    def visit(v: pathlib.Path) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(roots: list[str]) -> int:
    bad = 0
    for root in roots:
        crate = Crate(pathlib.Path(root).resolve())
        graph = crate.edges()
        for comp in cycles(graph):
            bad += 1
            names = sorted(str(p.relative_to(pathlib.Path.cwd().resolve())) for p in comp)
            print("cycle: " + " <-> ".join(names))
    if bad == 0:
        print(f"no import cycles in {', '.join(roots)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["src"]))
