#!/usr/bin/env python3
"""Longest functions outside tests in a crate's sources (brace matching from each `fn`).
Usage: fn_lengths.py <crate>/src [limit]   exits 1 when one is longer than limit (120)."""
import os, re, sys
root = sys.argv[1]
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 120
rows = []
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs') or f in ('tests.rs',) or f.endswith('_props.rs'):
            continue
        p = os.path.join(dp, f)
        lines = open(p).read().split('\n')
        end = len(lines)
        for i, l in enumerate(lines):
            if re.match(r'\s*#\[cfg\(test\)\]', l) and i + 1 < end and 'mod tests' in lines[i + 1]:
                end = i
                break
        i = 0
        while i < end:
            m = re.match(r'\s*(pub(\([a-z]+\))?\s+)?(async\s+)?fn\s+(\w+)', lines[i])
            if m:
                depth, j, opened = 0, i, False
                while j < end:
                    depth += lines[j].count('{') - lines[j].count('}')
                    opened = opened or '{' in lines[j]
                    if opened and depth <= 0:
                        break
                    if not opened and lines[j].rstrip().endswith(';'):
                        break
                    j += 1
                rows.append((j - i + 1, f"{p}:{i + 1}", m.group(4)))
            i += 1
rows.sort(reverse=True)
for n, where, name in rows[:10]:
    print(f"{n:5} {name:32} {where}")
sys.exit(1 if rows and rows[0][0] > limit else 0)
