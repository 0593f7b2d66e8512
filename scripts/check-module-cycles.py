#!/usr/bin/env python3
"""Fails if the modules of any crate import each other in a circle.

    scripts/check-module-cycles.py [CRATE_DIR ...]     default: every crates/*/

The rule: inside every module, its child modules depend on each other without a cycle. A
reference from module A to module B (a `use` or a path `crate::b::Item`, `super::b::Item`
in code) counts between the two children of their closest common ancestor that contain A
and B. So `crate::endpoint::b2bua` using `crate::bridge` is an edge endpoint -> bridge, and
bridge using `crate::endpoint::Command` closes a cycle. A module using its own ancestors
(`super::Endpoint` in endpoint/b2bua.rs, `use super::*` in tests) is how Rust splits one
type's code over files, and is not an edge.

No tool of the field does this reliably on stable Rust without compiling the crate with a
rustc driver (cargo-modules needs rust-analyzer's exact version), so it is read from the
source: comments, strings and char literals are blanked first, `use` trees are expanded,
inline `mod x { .. }` blocks are followed. Prints each cycle found with the references that
make it, and exits 1 if there is one.
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def blank(text):
    """Comments, string and char literals replaced by spaces (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and not re.match(r"\w", text[i - 1 : i] or " "):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i : j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:]):
            m = re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (as lists of segments). `as alias`
    must be stripped first (whitespace is removed here)."""
    tree = re.sub(r"\s+", "", tree)

    def parse(s, i):
        # Returns (list of paths, next index). Grammar: path ( '::' ( '{' list '}' | '*' ) )?
        prefix = []
        while i < len(s):
            m = re.match(IDENT, s[i:])
            if m:
                prefix.append(m.group(0))
                i += len(m.group(0))
                if s.startswith("::", i):
                    i += 2
                    continue
                return [prefix], i
            if s[i] == "*":
                return [prefix], i + 1
            if s[i] == "{":
                i += 1
                paths = []
                while i < len(s) and s[i] != "}":
                    sub, i = parse(s, i)
                    paths.extend(prefix + p for p in sub)
                    if i < len(s) and s[i] == ",":
                        i += 1
                return paths, i + 1
            break
        return [prefix], i

    return parse(tree, 0)[0]


def module_of(src, path):
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    if parts and parts[0] == "bin":
        return None  # each bin is a crate root of its own; not part of the lib's graph
    return tuple(parts)


def references(src, path, modules):
    """Yields (from_module, to_path_segments, line) for each crate-internal reference."""
    base = module_of(src, path)
    if base is None:
        return
    raw = path.read_text()
    text = blank(raw)
    # `use` statements: strip `as alias` before expanding.
    uses = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        tree = re.sub(r"\s+as\s+" + IDENT, "", m.group(1))
        uses.append((m.start(), m.end(), tree))
    use_spans = [(s, e) for s, e, _ in uses]

    # Inline modules: (start offset, end offset, path) via brace matching.
    inline = []
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", text):
        depth, j = 1, m.end()
        while j < len(text) and depth:
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        inline.append((m.start(), j, m.group(1)))

    def module_at(offset):
        mod = list(base)
        for s, e, name in inline:
            if s <= offset < e:
                mod.append(name)
        return tuple(mod)

    def line_at(offset):
        return text.count("\n", 0, offset) + 1

    def resolve(mod, segs):
        if not segs:
            return None
        if segs[0] == "crate":
            return segs[1:]
        cur = list(mod)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                if not cur:
                    return None
                cur.pop()
            segs = segs[1:]
        return cur + list(segs) if segs is not None else None

    for s, _, tree in uses:
        mod = module_at(s)
        for p in expand_use_tree(tree):
            if p and p[0] in ("crate", "super", "self"):
                r = resolve(mod, p)
                if r is not None:
                    yield mod, r, line_at(s)
    for m in re.finditer(r"\b(crate|super|self)((?:::" + IDENT + r")+)", text):
        if any(s <= m.start() < e for s, e in use_spans):
            continue
        mod = module_at(m.start())
        segs = [m.group(1)] + m.group(2).split("::")[1:]
        r = resolve(mod, segs)
        if r is not None:
            yield mod, r, line_at(m.start())


def target_module(segs, modules):
    """The deepest module a path names (its item lives there)."""
    for k in range(len(segs), -1, -1):
        if tuple(segs[:k]) in modules:
            return tuple(segs[:k])
    return ()


def check_crate(crate):
    src = crate / "src"
    files = [p for p in sorted(src.rglob("*.rs"))]
    modules = {()}
    for p in files:
        m = module_of(src, p)
        if m is not None:
            for k in range(len(m) + 1):
                modules.add(m[:k])
    # Inline modules are modules too.
    for p in files:
        base = module_of(src, p)
        if base is None:
            continue
        for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", blank(p.read_text())):
            modules.add(base + (m.group(1),))

    # edges[parent][(a, b)] = [where]
    edges = defaultdict(lambda: defaultdict(list))
    for p in files:
        for frm, segs, line in references(src, p, modules):
            to = target_module(segs, modules)
            # Lift to the children of the closest common ancestor.
            k = 0
            while k < len(frm) and k < len(to) and frm[k] == to[k]:
                k += 1
            if k == len(frm) or k == len(to):
                continue  # one is an ancestor of the other (or the same module)
            parent = frm[:k]
            a, b = frm[k], to[k]
            edges[parent][(a, b)].append(f"{p.relative_to(crate)}:{line} -> {'::'.join(segs)}")

    cycles = []
    for parent, es in edges.items():
        graph = defaultdict(set)
        for a, b in es:
            graph[a].add(b)
        # Strongly connected components (Tarjan).
        index, low, stack, on, sccs = {}, {}, [], set(), []
        counter = [0]

        def strong(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in graph[v]:
                if w not in index:
                    strong(w)
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
                    sccs.append(sorted(comp))

        for v in list(graph):
            if v not in index:
                strong(v)
        for comp in sccs:
            cycles.append((parent, comp, es))
    return cycles


def main():
    sys.setrecursionlimit(10000)
    root = Path(__file__).resolve().parent.parent
    crates = [Path(a) for a in sys.argv[1:]] or sorted(
        p for p in (root / "crates").iterdir() if (p / "src").is_dir()
    )
    bad = 0
    for crate in crates:
        for parent, comp, es in check_crate(crate):
            bad += 1
            where = "crate root" if not parent else "::".join(parent)
            print(f"{crate.name}: import cycle among the modules of {where}: {' <-> '.join(comp)}")
            for (a, b), refs in sorted(es.items()):
                if a in comp and b in comp:
                    print(f"  {a} -> {b}: {refs[0]}" + (f" (and {len(refs) - 1} more)" if len(refs) > 1 else ""))
    if bad:
        print(f"{bad} module import cycle(s)")
        return 1
    print(f"module cycles: none in {len(crates)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
