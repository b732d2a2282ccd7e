#!/usr/bin/env python3
"""Fails when a module of a workspace crate imports a module that imports it back.

For each crate's `src/`, every file is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`). Each
path in a file's code (`use` trees and inline paths starting at `crate`, `self` or `super`;
comments, string literals and `#[cfg(test)]` items left out) is resolved to the module that
defines what it names, following `pub use` re-exports. A path from `a::b` to `a::c::x` is an
edge from `b` to `c` inside `a`; one from `a::b` to `d::x`, an edge from `a` to `d` at the crate
root; a module using its parent or its own children adds none. A strongly connected set of two
or more sibling modules is a circle; each is printed with the files whose paths make it.

Run: scripts/module-circles.py [CRATE_DIR ...]   (default: every crate of the workspace)
"""
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
INLINE_PATH = re.compile(rf"\b(?:crate|self|super)(?:::{IDENT})+")
USE = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]*);", re.S)
TEST_ONLY = re.compile(r"#\[cfg\(test\)\]")
TEST_FILES = {"tests.rs"}


def crates():
    for manifest in sorted(ROOT.glob("*/Cargo.toml")) + sorted(ROOT.glob("*/*/Cargo.toml")):
        if {"target", "fuzz"} & set(manifest.relative_to(ROOT).parts):
            continue
        if (manifest.parent / "src" / "lib.rs").is_file():
            yield manifest.parent


def module_of(src, file):
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod" or (len(parts) == 1 and parts[0] in ("lib", "main")):
        parts = parts[:-1]
    return tuple(parts)


RAW_STRING = re.compile(r'r(#*)"')
CHAR = re.compile(r"'(?:\\.|[^\\'])'")


def strip_comments_and_strings(text):
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif (m := RAW_STRING.match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif text[i] == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif (m := CHAR.match(text, i)):
            i += len(m.group(0))
            out.append("' '")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def item_end(code, start):
    """The end of the item that starts at `start`: after its `;`, or its braces' close."""
    i = start
    while i < len(code) and code[i] not in ";{":
        i += 1
    if i >= len(code) or code[i] == ";":
        return i + 1
    depth = 0
    while i < len(code):
        depth += {"{": 1, "}": -1}.get(code[i], 0)
        i += 1
        if depth == 0:
            break
    return i


def without_tests(code):
    """The code without its `#[cfg(test)]` items, and the names of modules declared so."""
    test_modules, out, at = set(), [], 0
    for m in TEST_ONLY.finditer(code):
        if m.start() < at:
            continue
        out.append(code[at : m.start()])
        rest = m.end()
        while (attr := re.match(r"\s*#\[[^\]]*\]", code[rest:])):
            rest += len(attr.group(0))
        if (decl := re.match(rf"\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+({IDENT})\s*;", code[rest:])):
            test_modules.add(decl.group(1))
        at = item_end(code, rest)
    out.append(code[at:])
    return "".join(out), test_modules


def use_paths(tree, prefix=()):
    """The paths of a `use` tree, each a tuple of segments (the last may be `*`)."""
    tree = tree.strip()
    if not tree:
        return
    if tree.startswith("{") and tree.endswith("}"):
        depth, item = 0, ""
        for ch in tree[1:-1] + ",":
            if ch == "," and depth == 0:
                yield from use_paths(item, prefix)
                item = ""
                continue
            depth += {"{": 1, "}": -1}.get(ch, 0)
            item += ch
        return
    head, sep, rest = tree.partition("::")
    head = head.strip()
    if sep:
        yield from use_paths(rest, prefix + (head,))
    else:
        name, _, alias = head.partition(" as ")
        name, alias = name.strip(), alias.strip()
        if name == "self":
            yield prefix, alias or (prefix[-1] if prefix else "")
        else:
            yield prefix + (name,), alias or name


def absolute(module, path, modules):
    """`path` from `module`, as a path from the crate root: one starting at `crate`, `self`
    or `super`, or at a child module of `module` (a relative `use`); None for others (an
    external crate, the prelude)."""
    if path and path[0] not in ("crate", "self", "super") and tuple(module) + (path[0],) in modules:
        path = ("self",) + tuple(path)
    if not path or path[0] not in ("crate", "self", "super"):
        return None
    if path[0] == "crate":
        return tuple(path[1:])
    base, rest = list(module), list(path)
    if rest[0] == "self":
        rest = rest[1:]
    while rest and rest[0] == "super":
        base, rest = base[:-1], rest[1:]
    return tuple(base + rest)


class Crate:
    def __init__(self, src):
        self.src = src
        self.files, self.test_modules = {}, set()
        for file in sorted(src.rglob("*.rs")):
            if file == src / "main.rs":
                continue  # a binary's root, another crate beside the library
            module = module_of(src, file)
            code, tests = without_tests(strip_comments_and_strings(file.read_text()))
            self.files[module] = (file, code)
            self.test_modules |= {module + (name,) for name in tests}
        self.modules = set(self.files)
        self.exports = defaultdict(dict)
        for module, (_, code) in self.files.items():
            for visibility, tree in USE.findall(code):
                if not visibility:
                    continue
                for path, name in use_paths(tree):
                    target = absolute(module, path, self.modules)
                    if target and path[-1] != "*":
                        self.exports[module][name] = target

    def home(self, path, depth=0):
        """The module that defines what the absolute `path` names."""
        here = ()
        for i, segment in enumerate(path):
            if here + (segment,) in self.modules:
                here += (segment,)
            elif segment in self.exports.get(here, {}) and depth < 16:
                return self.home(self.exports[here][segment] + tuple(path[i + 1 :]), depth + 1)
            else:
                break
        return here

    def edges(self):
        for module, (file, code) in self.files.items():
            if file.name in TEST_FILES or file.stem.endswith("_tests") or module in self.test_modules:
                continue
            paths = []
            for _, tree in USE.findall(code):
                paths.extend(path for path, _ in use_paths(tree))
            inline = USE.sub("", code)
            paths.extend(tuple(p.split("::")) for p in INLINE_PATH.findall(inline))
            for path in paths:
                target = absolute(module, path, self.modules)
                if target is None:
                    continue
                home = self.home(target)
                common = 0
                while common < min(len(module), len(home)) and module[common] == home[common]:
                    common += 1
                if common < len(module) and common < len(home):
                    yield file, module[:common], module[common], home[common]


def circles(graph):
    """Strongly connected components of two or more nodes (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def shown(path):
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(dirs):
    failed = False
    for crate in dirs:
        graphs = defaultdict(lambda: defaultdict(set))
        why = defaultdict(set)
        for file, parent, a, b in Crate(crate / "src").edges():
            graphs[parent][a].add(b)
            why[(parent, a, b)].add(shown(file))
        for parent, graph in sorted(graphs.items()):
            for component in circles(graph):
                failed = True
                where = "::".join(parent) or "the crate root"
                print(f"{shown(crate)}: a module circle in {where}: {' ↔ '.join(component)}")
                for a in component:
                    for b in sorted(graph[a] & set(component)):
                        print(f"  {a} → {b} ({', '.join(sorted(why[(parent, a, b)]))})")
    if failed:
        sys.exit(1)
    print("no module circles")


if __name__ == "__main__":
    sys.setrecursionlimit(10000)
    main([Path(d).resolve() for d in sys.argv[1:]] or list(crates()))
