#!/usr/bin/env python3
"""Module import graph of a crate from `crate::a::b` paths (use lines and inline paths,
outside #[cfg(test)] modules), and its strongly connected components (circles)."""
import os, re, sys
root = sys.argv[1]  # e.g. edge-agent/src
depth = int(sys.argv[2]) if len(sys.argv) > 2 else 1
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p = os.path.join(dp, f)
        rel = os.path.relpath(p, root)[:-3].split(os.sep)
        if rel[-1] == 'mod': rel = rel[:-1]
        if rel in (['lib'], ['main']): continue
        name = '::'.join(rel[:depth])
        text = open(p).read()
        # drop test modules: from the first `#[cfg(test)]` to the end (tests sit at the end)
        i = text.find('#[cfg(test)]')
        if i >= 0: text = text[:i]
        # comments (doc links are not imports)
        text = re.sub(r'//[^\n]*', '', text)
        mods.setdefault(name, set())
        for m in re.finditer(r'crate::((?:\w+::)*\w+)', text):
            parts = m.group(1).split('::')
            tgt = '::'.join(parts[:depth])
            mods[name].add(tgt)
        for m in re.finditer(r'use crate::\{([^;]*)\}', text):
            for item in re.findall(r'(\w+)(?:::|\s*[,}]|$)', m.group(1)):
                pass
        for m in re.finditer(r'\bsuper::(\w+)', text):
            pass
edges = {a: {b for b in bs if b in mods and b != a} for a, bs in mods.items()}
# Tarjan
idx, low, st, on, out, n = {}, {}, [], set(), [], [0]
def sc(v):
    idx[v] = low[v] = n[0]; n[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        c = []
        while True:
            w = st.pop(); on.discard(w); c.append(w)
            if w == v: break
        out.append(c)
sys.setrecursionlimit(10000)
for v in sorted(edges):
    if v not in idx: sc(v)
circles = [sorted(c) for c in out if len(c) > 1]
for a in sorted(edges): print(f"{a:14} -> {', '.join(sorted(edges[a]))}")
print("circles:", circles if circles else "none")
sys.exit(1 if circles else 0)
