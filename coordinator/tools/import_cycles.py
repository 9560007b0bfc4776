#!/usr/bin/env python3
"""Module import graph of a crate from `crate::` paths (use lines and inline paths) and
report cycles between top-level modules. Usage: cycles.py <crate>/src"""
import os, re, sys
root = sys.argv[1]
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p = os.path.join(dp, f)
        rel = os.path.relpath(p, root)
        top = rel.split(os.sep)[0].removesuffix('.rs')
        if top in ('lib', 'main'): continue
        src = open(p).read()
        # drop test modules: everything after `#[cfg(test)]\nmod tests`
        m = re.search(r'#\[cfg\(test\)\]\s*mod tests', src)
        if m: src = src[:m.start()]
        src = re.sub(r'//.*', '', src)
        deps = set(re.findall(r'crate::([a-z_]+)', src))
        for g in re.findall(r'crate::\{([^}]*)\}', src):
            deps |= set(re.findall(r'\b([a-z_]+)\b', g))
        mods.setdefault(top, set()).update(d for d in deps if d != top)
names = set(mods)
g = {k: {d for d in v if d in names} for k, v in mods.items()}
# Tarjan SCC
idx, low, st, on, out, n = {}, {}, [], set(), [], [0]
def sc(v):
    idx[v] = low[v] = n[0]; n[0] += 1; st.append(v); on.add(v)
    for w in g[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        c = []
        while True:
            w = st.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: out.append(sorted(c))
sys.setrecursionlimit(10000)
for v in sorted(g):
    if v not in idx: sc(v)
for k in sorted(g): print(f"{k}: {' '.join(sorted(g[k]))}")
print("cycles:", out if out else "none")
sys.exit(1 if out else 0)
