#!/usr/bin/env python3
"""Independent reference for the parity tests (not used by the build).

A from-scratch re-implementation of the XRBench artifact's runtime and scoring, written from
the documented semantics in configs/xrbench/README.md §3 and the artifact's ScoringModule,
sharing no code with the Rust crate. It calls the C library's own srand()/rand() and expf()
through ctypes, and rounds every float operation to 32 bits as the artifact does.

Usage: python3 xrbench_ref.py SCENARIO HARDWARE SEED
Prints the overall score and, per model in first-log order: logged, dropped, model score.
"""
import csv, ctypes, struct, sys, tomllib
from pathlib import Path

libc = ctypes.CDLL("libc.so.6")
libm = ctypes.CDLL("libm.so.6")
libm.expf.restype = ctypes.c_float
libm.expf.argtypes = [ctypes.c_float]
RAND_MAX = 2147483647


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


root = Path(__file__).resolve().parents[3] / "configs" / "xrbench"
scen = tomllib.load(open(root / "scenarios.toml", "rb"))["scenarios"]
hw = tomllib.load(open(root / "hardware.toml", "rb"))["systems"]


def totals(model, df, tag):
    cyc, nj = 0, 0.0
    for r in csv.DictReader(open(root / "layer_costs.csv")):
        if r["model"] == model and r["dataflow"] == df and r["hw_tag"] == tag:
            cyc += int(r["latency_cycles"])
            nj += float(r["energy_nj"])
    return f32(f32(float(cyc)) / f32(1e6)), f32(nj / 1e6)


def run(sc_name, hw_name, seed):
    models = scen[sc_name]["models"]
    accs = hw[hw_name]["accelerators"]
    nm, na = len(models), len(accs)
    lat = [[0.0] * na for _ in models]
    en = [[0.0] * na for _ in models]
    for m, sm in enumerate(models):
        for a, acc in enumerate(accs):
            lat[m][a], en[m][a] = totals(sm["cost_model"], acc["dataflow"], acc["cost_tag"])
    names = [sm["name"] for sm in models]
    period = [1000 // sm["fps"] for sm in models]
    total = [700 // p for p in period]
    dep = [names.index(sm["depends_on"][0]) if sm.get("depends_on") else None for sm in models]
    prob = [f32(sm.get("probability", 1.0)) for sm in models]
    tick = f32(float(1000 // max(sm["fps"] for sm in models)))
    by_name = sorted(range(nm), key=lambda m: names[m].encode())
    libc.srand(seed)
    nxt = [0] * nm
    queue = [[] for _ in models]  # (frame, deadline)
    done_count = [0] * nm
    running = [None] * na  # (m, frame, deadline, done, energy)
    log = []  # (m, dropped, done, deadline, energy)
    now, k = f32(0.0), 0
    while True:
        for m in range(nm):
            libc.rand()  # unused jitter
            i = nxt[m]
            if i < total[m] and f32(f32(float(i)) * f32(float(period[m]))) <= now:
                u = f32(f32(float(libc.rand())) / f32(float(RAND_MAX)))
                if prob[m] > u:
                    queue[m].append((i, f32(float((i + 1) * period[m]))))
                nxt[m] += 1
        for a in range(na):
            r = running[a]
            if r is not None and f32(now + f32(0.01)) >= r[3]:
                log.append((r[0], False, r[3], r[2], r[4]))
                done_count[r[0]] += 1
                running[a] = None
        changed = True
        while changed:
            changed = False
            for m in by_name:
                if queue[m] and queue[m][0][1] < now:
                    fr, dl = queue[m].pop(0)
                    log.append((m, True, None, dl, 0.0))
                    changed = True
        changed = True
        while changed:
            changed = False
            for m in by_name:
                if not queue[m]:
                    continue
                fr, dl = queue[m][0]
                if dep[m] is not None and done_count[dep[m]] - 1 < fr:
                    continue
                idle = [a for a in range(na) if running[a] is None]
                if not idle:
                    continue
                a = min(idle, key=lambda a: (lat[m][a], a))
                queue[m].pop(0)
                running[a] = (m, fr, dl, f32(now + lat[m][a]), en[m][a])
                changed = True
        if all(nxt[m] >= total[m] for m in range(nm)):
            break
        while f32(f32(float(k)) * tick) <= now:
            k += 1
        t = f32(f32(float(k)) * tick)
        for r in running:
            if r is not None and r[3] < t:
                t = r[3]
        now = t
    # scoring, as ScoringModule::ComputeScore
    order, per = [], {}
    for m, dropped, done, dl, e in log:
        if m not in per:
            order.append(m)
            per[m] = [0, 0, f32(0.0)]
        p = per[m]
        p[0] += 1
        if dropped:
            p[1] += 1
        else:
            rt = f32(1.0 / f32(1.0 + libm.expf(f32(f32(15.0) * f32(done - dl)))))
            es = f32((1500.0 - e) / 1500.0)
            p[2] = f32(p[2] + f32(rt * es))
    overall = f32(0.0)
    rows = []
    for m in order:
        n, d, s = per[m]
        drop = f32(float(d) / float(n))
        ux = f32(1.0 - drop)
        ms = f32(f32(s / f32(float(n))) * ux)
        overall = f32(overall + ms)
        rows.append((names[m], n, d, ms))
    overall = f32(f32(overall / f32(float(len(order)))) * f32(100.0))
    return overall, rows


if __name__ == "__main__":
    o, rows = run(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print(f"overall {o:.9f}")
    for r in rows:
        print(f"  {r[0]:<24} logged {r[1]:>3} dropped {r[2]:>3} score {r[3]:.9f}")
