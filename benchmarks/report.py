"""The summary of a run: the table on stderr, each ipcluster figure against the best peer, targets."""

from __future__ import annotations

from typing import Any, TextIO

from measure import higher_is_better

#: Order of the systems within a figure's rows: floors first, then ipcluster, then the peers.
SYSTEM_ORDER = ["numpy", "pyzmq", "ipcluster", "ipyparallel", "dask"]
PEER_SYSTEMS = ("ipyparallel", "dask")

#: Targets of ipcluster's figures (medians on a 2-core machine): (workload, op) -> (comparison, value)
TARGETS: dict[tuple[str, str], tuple[str, float]] = {
    ("cold_start_2", "start"): ("<=", 0.3),
    ("apply_rtt", "apply_sync"): ("<=", 0.3),
    ("lb_rtt", "apply_sync"): ("<=", 0.5),
    ("lb_map_10k", "map_sync"): (">=", 20_000),
    ("lb_apply_async_10k", "apply_async"): (">=", 10_000),
    ("map_200x10ms", "efficiency"): (">=", 0.97),
    ("lb_map_200x10ms", "efficiency"): (">=", 0.97),
    ("push_pull_100MiB", "push"): (">=", 3.0),
    ("push_pull_100MiB", "pull"): (">=", 3.0),
    ("push_pull_1GiB", "push"): (">=", 2.0),
    ("scatter_gather_1e7", "scatter"): ("<=", 12),
    ("scatter_gather_1e7", "gather"): ("<=", 30),
    ("apply_all_2", "apply_sync"): ("<=", 0.5),
    ("apply_all_8", "apply_sync"): ("<=", 1.5),
    ("apply_all_32", "apply_sync"): ("<=", 5),
}


#: ipcluster figures compared with a differently named peer figure: ipcluster's map sends one
#: message per item only with chunksize=1, which is what the peers' default map does.
PEER_FIGURE = {("lb_map_10k", "map_sync_chunksize1"): ("lb_map_10k", "map_sync")}


def compare(records: list[dict]) -> list[dict]:
    """For each ipcluster figure that a peer also measured: the best peer's median and how many
    times better (``factor`` > 1) or worse (< 1) ipcluster's median is, in the unit's direction."""
    out = []
    for rec in records:
        if rec["system"] != "ipcluster":
            continue
        wl, op = PEER_FIGURE.get((rec["workload"], rec["op"]), (rec["workload"], rec["op"]))
        rivals = [r for r in records if r["system"] in PEER_SYSTEMS
                  and (r["workload"], r["op"], r["unit"]) == (wl, op, rec["unit"])]
        if not rivals:
            continue
        up = higher_is_better(rec["unit"])
        best = (max if up else min)(rivals, key=lambda r: r["median"])
        mine, theirs = rec["median"], best["median"]
        if mine <= 0 or theirs <= 0:
            continue
        factor = mine / theirs if up else theirs / mine
        out.append({"workload": rec["workload"], "op": rec["op"], "unit": rec["unit"],
                    "better": "higher" if up else "lower", "ipcluster": mine,
                    "best_peer": best["system"], "peer_median": theirs, "factor": round(factor, 3)})
    return out


def describe(cmp: dict) -> str:
    """``2.31x better than dask`` / ``1.50x worse than ipyparallel``."""
    f = cmp["factor"]
    if 0.99 <= f <= 1.01:
        return f"same as {cmp['best_peer']} (within 1%)"
    if f >= 1:
        return f"{f:.2f}x better than {cmp['best_peer']}"
    return f"{1 / f:.2f}x worse than {cmp['best_peer']}"


def target_mark(rec: dict) -> str:
    """``<= 0.3 ok`` / ``<= 0.3 MISSED`` for an ipcluster figure with a target, else ``""``."""
    tgt = TARGETS.get((rec["workload"], rec["op"]))
    if rec["system"] != "ipcluster" or not tgt:
        return ""
    cmp, val = tgt
    ok = rec["median"] <= val if cmp == "<=" else rec["median"] >= val
    return f"{cmp} {val:g} {'ok' if ok else 'MISSED'}"


def ordered(records: list[dict]) -> list[dict]:
    """The records grouped by figure (in the order figures first appeared), systems in a fixed order."""
    first: dict[tuple[str, str], int] = {}
    for rec in records:
        first.setdefault((rec["workload"], rec["op"]), len(first))

    def key(rec: dict) -> tuple[int, int]:
        sys_rank = SYSTEM_ORDER.index(rec["system"]) if rec["system"] in SYSTEM_ORDER else len(SYSTEM_ORDER)
        return first[(rec["workload"], rec["op"])], sys_rank

    return sorted(records, key=key)


def table_rows(records: list[dict]) -> list[tuple[str, ...]]:
    """Header and one row per record (see :func:`print_table`)."""
    cmps = {(c["workload"], c["op"]): describe(c) for c in compare(records)}
    rows: list[tuple[str, ...]] = [("system", "workload", "op", "median", "p10", "p90", "unit", "better",
                                     "n", "ipcluster vs best peer", "target")]
    for r in ordered(records):
        vs = cmps.get((r["workload"], r["op"]), "") if r["system"] == "ipcluster" else ""
        rows.append((r["system"], r["workload"], r["op"], f"{r['median']:g}", f"{r['p10']:g}",
                     f"{r['p90']:g}", r["unit"], "higher" if higher_is_better(r["unit"]) else "lower",
                     str(r["n"]), vs, target_mark(r)))
    return rows


def print_table(records: list[dict], skipped: list[dict], failed: dict[str, str], file: TextIO) -> None:
    """The table of every figure (with ``better``: which direction of the unit is better, and each
    ipcluster figure's ratio to the best peer in that direction), then skips and failures."""
    rows = table_rows(records)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(file=file)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=file)
    for s in skipped:
        print(f"SKIPPED {s['system']} {s['workload']}: {s['skipped']}", file=file)
    for name, why in failed.items():
        print(f"FAILED {name}: {why}", file=file)


def markdown(records: list[dict]) -> str:
    """The same table as Markdown (for benchmarks/README.md)."""
    rows = table_rows(records)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def summary(records: list[dict]) -> dict[str, Any]:
    """What the JSON file keeps besides the records: the comparisons."""
    return {"comparisons": compare(records)}
