#!/usr/bin/env python3
"""The results table of a harness run: one line per claim, ours beside llama.cpp on the
same machine, the ratio, and whether every run of ours generated the resident run's ids.

    python3 scripts/bench/table.py results.jsonl [more.jsonl ...] > table.md
    python3 scripts/bench/table.py results.jsonl --into README.md   # between its results markers
"""
import json
import sys


def span(values, fmt="%.2f"):
    values = sorted(v for v in values if v is not None)
    if not values:
        return "-"
    if len(values) == 1 or values[0] == values[-1]:
        return fmt % values[0]
    return (fmt + "–" + fmt) % (values[0], values[-1])


def table_line(claim, test, key, of, rows):
    """The table's line for one claim and one test (decode or prefill); the resident run
    is the claim's, else one of the same model in another claim (`rows`)."""
    ours = [r for r in of if r["role"] == "ours" and r.get(key) is not None]
    theirs = [r for r in of if r["role"] == "llama.cpp" and r.get(key) is not None]
    resident = [r for r in of if r["role"] == "resident"]
    if not resident and ours:
        resident = [r for r in rows if r["role"] == "resident" and r["preset"] == ours[0]["preset"]]
    ours_rates = [r[key] for r in ours]
    their_rates = [r[key] for r in theirs]
    ratio = "-"
    if ours_rates and their_rates:
        lo, hi = min(ours_rates) / max(their_rates), max(ours_rates) / min(their_rates)
        ratio = span([lo, hi]) + "×"
    reference = resident[0]["checksum"] if resident else None
    if test != "decode":
        same = "-"
    elif reference is None:
        same = "-"
    else:
        same = "%d of %d" % (sum(1 for r in ours if r["checksum"] == reference), len(ours))
    config = ", ".join(sorted({r["args"] for r in theirs})) or "-"
    peaks = span([r.get("own_peak_mib") for r in ours], "%.0f") + " / " + span([r["peak_mib"] for r in ours], "%.0f")
    return "| %s | %s | %s | %s | `%s` | %s | %s | %s | %s |" % (
        claim, test, span(ours_rates), peaks, config, span(their_rates),
        span([r["peak_mib"] for r in theirs], "%.0f"), ratio, same)


def main(paths):
    rows = [json.loads(line) for path in paths for line in open(path) if line.strip()]
    if not rows:
        sys.exit("no rows in %s" % ", ".join(paths))
    claims = []
    for row in rows:
        if row["claim"] not in claims:
            claims.append(row["claim"])
    first = rows[0]
    machines = sorted({(r["device"], r["commit"], r["date"]) for r in rows})
    if len(machines) > 1:
        sys.exit("rows from several machines or commits: %s" % machines)
    print("%s · `%s` · %s · `bash scripts/bench/run.sh`\n" % (first["device"], first["commit"], first["date"]))
    print("| model, budget | test | ours (tok/s) | ours peak MiB: allocations / process | llama.cpp | llama.cpp (tok/s) | llama.cpp peak MiB: process | ratio | ids = resident |")
    print("|---|---|---:|---:|---|---:|---:|---:|---|")
    for claim in claims:
        of = [r for r in rows if r["claim"] == claim]
        for key, test in (("tok_s", "decode"), ("pp_tok_s", "prefill")):
            if any(r.get(key) is not None for r in of if r["role"] == "ours"):
                print(table_line(claim, test, key, of, rows))
    print("\nEach `ours` row: `cardinfer bench -m MODEL --device cuda ARGS`, median of `-r` runs; decode is tg, prefill pp;")
    print("llama.cpp: `llama-bench` (commit 0c1e570, CUDA build) on the same machine, in turn. Rows and")
    print("arguments: `scripts/bench/*.rows`. Peak of the process: nvidia-smi every 0.2 s, minus the idle")
    print("baseline (includes the CUDA context); ours also as the memory it allocated (cuMemGetInfo, sampled),")
    print("which is what the budget bounds.")


def into(path, paths):
    """Writes the table between `<!-- results:begin -->` and `<!-- results:end -->` of `path`."""
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(paths)
    text = open(path).read()
    begin, end = "<!-- results:begin -->\n", "<!-- results:end -->"
    if begin not in text or end not in text:
        sys.exit("%s has no results markers" % path)
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    open(path, "w").write(head + begin + out.getvalue() + end + tail)


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--into" in args:
        i = args.index("--into")
        into(args[i + 1], args[:i] + args[i + 2:])
    else:
        main(args)
