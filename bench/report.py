"""The bench's printed report: one block per server, the side-by-side table, the targets of issue 7."""

from __future__ import annotations

from bench.load import OPERATIONS

MEMORY_LIMIT_MB = 150.0
ISSUE_DIRECTORY = 100_000
ISSUE_BIG_GROUP = 100_000


def _table(headers: list[str], rows: list[list], left: int = 1) -> list[str]:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) if i < left else c.rjust(w)
                      for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in cells]


def _ok_rate(op: dict) -> float:
    return op.get("ok_per_s", op["ops_per_s"])


# --------------------------------------------------------------------------- one server


def render_server(name: str, server: dict) -> str:
    if "outcome" not in server:
        return f"== {name}: not measured ({server.get('skipped', '?')})"
    summary, timing = server["outcome"]
    plan = timing["plan"]
    lines = [f"== {name}  {server['url']}  ({server['mode']})",
             f"directory={timing['directory_size']} users (fill {plan['fill']} + cycle {plan['users']}) "
             f"reads={plan['reads']} groups={plan['groups']} members/group={plan['members_per_group']} "
             f"big group={plan['big_group']} small group={plan['small_group']} "
             f"big PATCH={plan['big_patch']}x{plan['big_patch_repeats']}", ""]
    lines += _table(["phase", "requests", "wall s", "req/s"],
                    [[p["name"], p["requests"], f"{p['wall_s']:.2f}",
                      f"{p['requests'] / p['wall_s']:.1f}" if p["wall_s"] else "-"]
                     for p in summary["phases"]])
    lines.append("")
    rows = [[op, o["count"], f"{o['ops_per_s']:.1f}", f"{o['p50_ms']:.1f}", f"{o['p95_ms']:.1f}",
             f"{o['p99_ms']:.1f}", f"{o['max_ms']:.1f}", o["errors"]]
            if o["count"] else [op, 0, *"------"]
            for op, o in summary["operations"].items()]
    rows.append(["total", summary["requests"], "", "", "", "", "",
                 f"{summary['errors']} ({summary['error_ratio'] * 100:.2f}%)"])
    lines += _table(["operation", "count", "ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"], rows)
    lines.append(f"(ops/s: operations over the wall time of their phases; client CPU "
                 f"{timing['client_cpu_s']:.1f} s over {timing['wall_s']:.1f} s of load)")
    usage = server.get("services")
    if usage:
        lines.append("")
        lines += _table(
            ["service", "procs", "RSS start MB", "RSS end MB", "RSS peak MB", "PSS peak MB", "CPU s",
             "busiest procs CPU s"],
            [[role, u["procs"], f"{u['rss_start_mb']:.1f}", f"{u['rss_end_mb']:.1f}",
              f"{u['rss_peak_mb']:.1f}", f"{u.get('pss_peak_mb', u['pss_end_mb']):.1f}",
              f"{sum(u['cpu_s_per_process']):.1f}",
              " ".join(f"{c:.1f}" for c in u["cpu_s_per_process"][:4]) or "-"]
             for role, u in usage.items()])
        lines.append("(RSS sums count the pages forked processes share once per process; PSS splits them)")
    if summary["error_samples"]:
        lines += ["", f"{name} errors (first of each operation):"]
        for op, msgs in summary["error_samples"].items():
            lines += [f"  {op}: {m}" for m in msgs]
    return "\n".join(lines)


# --------------------------------------------------------------------------- side by side


PEER_NAMES = {"peer": "scim2-server", "scimgateway": "scimgateway"}


def render_comparison(results: dict, key: str = "peer") -> list[str]:
    ours = results["servers"]["scimbus"]["outcome"][0]["operations"]
    peer_server = results["servers"].get(key) or {}
    peer = peer_server["outcome"][0]["operations"] if "outcome" in peer_server else {}
    rows = []
    for op in OPERATIONS:
        o, p = ours.get(op, {}), peer.get(op, {})

        def cells(x: dict) -> list:
            if not x or not x["count"]:
                return ["-"] * 5
            return [f"{x['ops_per_s']:.1f}", f"{x['p50_ms']:.1f}", f"{x['p95_ms']:.1f}", f"{x['p99_ms']:.1f}",
                    x["errors"]]

        both = o.get("count") and p.get("count") and p["ops_per_s"]
        ratio = f"{o['ops_per_s'] / p['ops_per_s']:.2f}x" if both else "-"
        rows.append([op, *cells(o), *cells(p), ratio])
    title = "" if key == "peer" else f" with {PEER_NAMES.get(key, key)}"
    lines = [f"== side by side{title} (same workload, same machine, one server at a time)"]
    column = "peer" if key == "peer" else PEER_NAMES.get(key, key)
    table = _table(["operation", "scimbus ops/s", "p50 ms", "p95 ms", "p99 ms", "errors",
                    f"{column} ops/s", "p50 ms", "p95 ms", "p99 ms", "errors", "ops/s ratio"], rows)
    lines += table
    if peer:
        lines.append(f"(peer: {peer_server['mode']})")
    else:
        lines.append(f"(peer not measured: {peer_server.get('skipped', 'run with the peer to compare')})")
    notes = (peer_server.get("outcome") or [None, {}])[1].get("dialect", {}).get("notes", [])
    if notes:
        lines += ["", "peer substitutions (the peer refused these Entra shapes; it was sent the closest "
                      "shape it accepts, scimbus was sent Entra's):"]
        lines += [f"  - {n}" for n in notes]
    elif peer:
        lines += ["", "peer substitutions: none (the peer accepted every Entra shape of the workload)"]
    return lines


# --------------------------------------------------------------------------- targets


def _op(results: dict, server: str, op: str) -> dict | None:
    s = results["servers"].get(server) or {}
    if "outcome" not in s:
        return None
    o = s["outcome"][0]["operations"].get(op)
    return o if o and o["count"] else None


def _seconds(value: float | None, op: dict | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" + (f" ({op['errors']} err)" if op and op["errors"] else "")


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def evaluate_targets(results: dict) -> list[dict]:
    """Each target of issue 7 with scimbus's value, the peer's, the ratio and whether it holds."""
    meta = results["meta"]
    out: list[dict] = []

    def add(key: str, target: str, goal: str, ours, peer, ratio, ok, shown_ours: str, shown_peer: str,
            note: str = "") -> None:
        out.append({"key": key, "target": target, "goal": goal, "scimbus": ours, "peer": peer, "ratio": ratio,
                    "pass": ok, "shown": [shown_ours, shown_peer], "note": note})

    # creates
    create_op = "fill-create" if _op(results, "scimbus", "fill-create") else "create-user"
    o, p = _op(results, "scimbus", create_op), _op(results, "peer", create_op)
    conc = meta["fill_concurrency"] if create_op == "fill-create" else meta["concurrency"]
    ours = _ok_rate(o) if o else None
    theirs = _ok_rate(p) if p else None
    ratio = round(ours / theirs, 2) if ours and theirs else None
    for factor, label in ((1.0, ""), (2.0, " (stretch)")):
        add(f"creates_{factor:g}x", f"creates/s ({create_op}, x{conc}) >= {factor:.1f}x peer{label}",
            f">= {factor:.1f}x", ours, theirs, ratio, None if ratio is None else ratio >= factor,
            f"{ours:.1f}/s" if ours is not None else "-", f"{theirs:.1f}/s" if theirs is not None else "-")

    # userName eq
    o, p = _op(results, "scimbus", "query-hit"), _op(results, "peer", "query-hit")
    size, rc = meta["directory_size"], meta["read_concurrency"]
    at = f"at {size} users, x{rc}"
    note = "" if size >= ISSUE_DIRECTORY else f"issue's size is {ISSUE_DIRECTORY} users (--directory-size)"
    ours, theirs = (_ok_rate(o) if o else None), (_ok_rate(p) if p else None)
    ratio = round(ours / theirs, 2) if ours and theirs else None
    add("reads_rate", f"userName eq GETs/s {at} >= 1.5x peer", ">= 1.5x", ours, theirs, ratio,
        None if ratio is None else ratio >= 1.5,
        f"{ours:.1f}/s" if ours is not None else "-", f"{theirs:.1f}/s" if theirs is not None else "-", note)
    ours, theirs = (o["p99_ms"] if o else None), (p["p99_ms"] if p else None)
    add("reads_p99", f"userName eq GET p99 {at} <= 20 ms", "<= 20 ms", ours, theirs,
        round(ours / theirs, 2) if ours and theirs else None,
        None if ours is None else (ours <= 20.0 and rc >= 16),
        f"{ours:.1f} ms" if ours is not None else "-", f"{theirs:.1f} ms" if theirs is not None else "-",
        note if rc >= 16 else f"run at concurrency {rc}: the target is stated at 16")

    # one add: big vs small group
    def big_small(server: str) -> tuple[float | None, str]:
        big, small = _op(results, server, "add-big-group"), _op(results, server, "add-small-group")
        if not big or not small or not small["median_ms"]:
            return None, "-"
        r = big["median_ms"] / small["median_ms"]
        return round(r, 2), f"{r:.2f}x ({big['median_ms']:.1f}/{small['median_ms']:.1f} ms)"

    (ours, shown_o), (theirs, shown_p) = big_small("scimbus"), big_small("peer")
    peer_big = meta.get("peer_big_group", meta["big_group"])
    same_size = peer_big == meta["big_group"]
    add("big_group_add",
        f"one add: {meta['big_group']}-member group <= 2x {meta['small_group']}-member (median)",
        "<= 2.0x", ours, theirs, round(ours / theirs, 2) if ours and theirs and same_size else None,
        None if ours is None else ours <= 2.0, shown_o,
        shown_p if same_size or theirs is None else f"{shown_p} at {peer_big}",
        "; ".join(n for n in (
            "" if meta["big_group"] >= ISSUE_BIG_GROUP else f"issue's big group is {ISSUE_BIG_GROUP} (--big-group)",
            "" if same_size else f"the peer's big group has {peer_big} members (--peer-big-group)") if n))

    # many members in one PATCH
    o, p = _op(results, "scimbus", "patch-many-members"), _op(results, "peer", "patch-many-members")
    ours, theirs = (o["median_ms"] / 1000 if o else None), (p["median_ms"] / 1000 if p else None)
    ok = None if o is None else (o["errors"] == 0 and ours < 2.0)
    add("big_patch",
        f"{meta['big_patch']} members in one PATCH < 2 s (median of {meta['big_patch_repeats']})",
        "< 2 s", ours, theirs, round(ours / theirs, 2) if ours and theirs else None, ok,
        _seconds(ours, o), _seconds(theirs, p),
        "" if meta["big_patch"] >= 10_000 else "issue's PATCH has 10000 members (--big-patch)")

    # memory
    def memory(server: str) -> tuple[float | None, str, dict]:
        usage = (results["servers"].get(server) or {}).get("services") or {}
        if not usage:
            return None, "-", {}
        peaks = {role: u.get("pss_peak_mb", u["pss_end_mb"]) for role, u in usage.items()}
        role = max(peaks, key=peaks.get)
        return peaks[role], f"{role} {peaks[role]:.1f} MB", peaks

    (ours, shown_o, peaks), (theirs, shown_p, _) = memory("scimbus"), memory("peer")
    over = [r for r, mb in peaks.items() if mb > MEMORY_LIMIT_MB]
    add("memory", f"every service <= {MEMORY_LIMIT_MB:.0f} MB (peak PSS per service; largest shown)",
        f"<= {MEMORY_LIMIT_MB:.0f} MB", ours, theirs, round(ours / theirs, 2) if ours and theirs else None,
        None if ours is None else not over, shown_o, shown_p,
        f"over: {', '.join(over)}" if over else "")

    # worker scaling
    sc = results.get("scaling")
    if sc:
        one, two = sc.get("workers_1"), sc.get("workers_2")
        shown = (f"{sc['ratio']:.2f}x ({one['ops_per_s']:.0f}/s -> {two['ops_per_s']:.0f}/s)"
                 if sc.get("ratio") else "-")
        add("scaling", f"2 workers / 1 worker >= 1.7x ({sc['creates']} creates x{sc['concurrency']}, "
                       f"steady load, not a drained queue)", ">= 1.7x", sc.get("ratio"), None, None,
            None if not sc.get("ratio") else sc["ratio"] >= 1.7, shown, "n/a")
    return out


def render_targets(results: dict) -> list[str]:
    meta = results["meta"]
    lines = [f"== targets of issue 7 (store: {meta.get('store', '?')}, {meta.get('cpus')} CPUs, "
             "load generator on the same machine)"]
    rows = []
    for t in results["targets"]:
        ratio = f"{t['ratio']:.2f}" if isinstance(t["ratio"], (int, float)) else "-"
        rows.append([t["target"], t["shown"][0], t["shown"][1], ratio, _verdict(t["pass"])])
    lines += _table(["target", "scimbus", "peer", "scimbus/peer", "result"], rows)
    notes = [f"  - {t['key']}: {t['note']}" for t in results["targets"] if t["note"]]
    if meta.get("store") != "PostgreSQL":
        notes.insert(0, "  - the targets are stated for PostgreSQL: run with --postgres")
    if notes:
        lines += ["notes:", *notes]
    held = sum(1 for t in results["targets"] if t["pass"])
    judged = sum(1 for t in results["targets"] if t["pass"] is not None)
    lines.append(f"{held} of {judged} targets hold")
    return lines


def render_all(results: dict) -> str:
    from bench.targets19 import render_cpu, render_targets_19

    blocks = [render_server(name, server) for name, server in results["servers"].items()]
    blocks.append("\n".join(render_comparison(results)))
    if "scimgateway" in results["servers"]:
        blocks.append("\n".join(render_comparison(results, "scimgateway")))
    blocks.append("\n".join(render_cpu(results)))
    blocks.append("\n".join(render_targets(results)))
    blocks.append("\n".join(render_targets_19(results)))
    return "\n\n".join(blocks)
