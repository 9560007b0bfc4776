#!/usr/bin/env python3
"""Longest functions outside tests in a crate's sources (brace matching from each `fn`).
Usage: fn_lengths.py <crate>/src [limit]   exits 1 when one is longer than limit (120)."""
import os, re, sys
root = sys.argv[1]
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 120
rows = []


def strip_literals(src):
    """Blank out comments, string/byte/raw-string and char literals (newlines kept), so braces
    inside them (e.g. `'{'`, `"{name}"`) are not counted."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith('//', i):
            j = src.find('\n', i)
            j = n if j < 0 else j
            out.append(' ' * (j - i)); i = j
        elif src.startswith('/*', i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith('/*', j): depth += 1; j += 2
                elif src.startswith('*/', j): depth -= 1; j += 2
                else: j += 1
            out.append(re.sub(r'[^\n]', ' ', src[i:j])); i = j
        elif (m := re.match(r'b?r(#*)"', src[i:i + 300])) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == '_')):
            close = '"' + m.group(1)
            j = src.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
            out.append(re.sub(r'[^\n]', ' ', src[i:j])); i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == '\\' else 1
            j += 1
            out.append(re.sub(r'[^\n]', ' ', src[i:j])); i = j
        elif c == "'" and (m := re.match(r"'(\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'\n])'", src[i:i + 16])):
            out.append(' ' * m.end()); i += m.end()
        else:
            out.append(c); i += 1
    return ''.join(out)


for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs') or f in ('tests.rs',) or f.endswith('_props.rs'):
            continue
        p = os.path.join(dp, f)
        lines = strip_literals(open(p).read()).split('\n')
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
