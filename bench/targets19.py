"""Issue 19's view of a run: CPU per write by process, and its targets against both peers.

CPU per write: each process tree's CPU seconds over a write phase (a /proc snapshot at the
phase's start and end, reaped children included: ``bench.procs.cpu_by_role``) divided by
the phase's requests. CPU time, unlike a rate, barely depends on what else the shared
machine runs at the moment, so it is the figure to compare across runs; the rates are
compared within one run only.
"""

from __future__ import annotations

from bench.report import PEER_NAMES, _ok_rate, _op, _table, _verdict

WRITE_PHASES = {  # phase key -> what its requests are
    "fill": "creates (fill)",
    "patch": "PATCH name+manager",
    "disable": "PATCH active",
    "adds": "member PATCH",
}
OURS = ("front", "worker", "redis", "gateway", "reader")
"""The processes the issue's 2 ms budget counts (nginx is the gateway). PostgreSQL is shown
beside them, not in the budget: it is the store, not one of our processes."""
CPU_LIMIT_MS = 2.0
PEERS = ("scimgateway", "peer")


def cpu_per_write(server: dict) -> dict[str, dict]:
    """{phase key or "all": {"requests": n, "ms": {role: ms per request}, "ours_ms", "total_ms"}}."""
    if "outcome" not in server:
        return {}
    phase_cpu = server["outcome"][1].get("phase_cpu") or {}
    out: dict[str, dict] = {}
    total_n, total_cpu = 0, {}
    for key in WRITE_PHASES:
        p = phase_cpu.get(key)
        if not p or not p["requests"]:
            continue
        n = p["requests"]
        total_n += n
        for role, s in p["cpu_s"].items():
            total_cpu[role] = total_cpu.get(role, 0.0) + s
        out[key] = _per_request(n, p["cpu_s"])
    if total_n:
        out["all"] = _per_request(total_n, total_cpu)
    return out


def _per_request(n: int, cpu_s: dict[str, float]) -> dict:
    ms = {role: max(s, 0.0) * 1000 / n for role, s in cpu_s.items()}
    return {"requests": n, "ms": ms, "ours_ms": sum(v for r, v in ms.items() if r in OURS),
            "total_ms": sum(ms.values())}


def render_cpu(results: dict) -> list[str]:
    servers = {name: cpu_per_write(s) for name, s in results["servers"].items()}
    roles: list[str] = []
    for rows in servers.values():
        for row in rows.values():
            roles += [r for r in row["ms"] if r not in roles and (row["ms"][r] > 0 or r in OURS)]
    order = [*OURS, "postgres", "deliverer", "sweeper", "run", "other", "peer"]
    roles.sort(key=lambda r: order.index(r) if r in order else len(order))
    lines = ["== CPU per write by process (ms of CPU per request over each write phase; "
             "all processes of each server, the load generator excluded)"]
    table = []
    for name, rows in servers.items():
        label = "scimbus" if name == "scimbus" else PEER_NAMES.get(name, name)
        for key, row in rows.items():
            what = "all writes" if key == "all" else WRITE_PHASES[key]
            table.append([label, what, row["requests"],
                          *[f"{row['ms'][r]:.2f}" if r in row["ms"] else "-" for r in roles],
                          f"{row['ours_ms']:.2f}" if name == "scimbus" else "-", f"{row['total_ms']:.2f}"])
    if not table:
        return [*lines, "(no write phase was measured)"]
    lines += _table(["server", "writes", "requests", *roles, "budget roles", "total"], table, left=2)
    lines.append(f"(budget roles: {', '.join(OURS)} (gateway is nginx): the issue's <= {CPU_LIMIT_MS:.0f} ms; "
                 "clock ticks of 10 ms, so small phases round coarsely)")
    return lines


# --------------------------------------------------------------------------- targets


def _rate(results: dict, server: str, *ops: str) -> float | None:
    found = [_op(results, server, op) for op in ops]
    return sum(_ok_rate(o) for o in found) if all(found) else None


def evaluate_targets_19(results: dict) -> list[dict]:
    meta = results["meta"]
    out: list[dict] = []

    def add(key: str, target: str, ours, sg, s2, goal: float | None, ok=None, unit: str = "/s", note: str = ""):
        def ratio(theirs):
            return round(ours / theirs, 2) if ours and theirs else None
        r_sg, r_s2 = ratio(sg), ratio(s2)
        if ok is None and goal is not None:
            basis = r_sg if key.endswith("_sg") else r_s2
            ok = None if basis is None else basis >= goal
        fmt = (lambda v: "-" if v is None else f"{v:.1f}{unit}")
        out.append({"key": key, "target": target, "scimbus": ours, "scimgateway": sg, "scim2-server": s2,
                    "ratio_scimgateway": r_sg, "ratio_scim2_server": r_s2, "pass": ok,
                    "shown": [fmt(ours), fmt(sg), fmt(s2)], "note": note})

    creates = ("fill-create",) if _op(results, "scimbus", "fill-create") else ("create-user",)
    patch = ("patch-user-name", "patch-user-manager")
    size = meta["directory_size"]
    for name, ops, goal in (("creates", creates, 1.0), ("PATCH", patch, 1.0),
                            ("member PATCH", ("patch-group-add",), 1.0), ("userName eq GETs", ("query-hit",), 1.5)):
        add(f"{name.replace(' ', '_')}_sg", f"{name}/s at {size} users >= {goal:.1f}x scimgateway",
            _rate(results, "scimbus", *ops), _rate(results, "scimgateway", *ops),
            _rate(results, "peer", *ops), goal)
    for op in ("fill-create", "create-user", "patch-user-name", "patch-user-manager", "patch-user-disable",
               "create-group", "patch-group-add"):
        add(f"{op}_s2", f"{op}/s >= 2.0x scim2-server", _rate(results, "scimbus", op),
            _rate(results, "scimgateway", op), _rate(results, "peer", op), 2.0)

    ours_patch, ours_create = _rate(results, "scimbus", *patch), _rate(results, "scimbus", *creates)
    conc = (meta["concurrency"], meta["fill_concurrency"] if creates[0] == "fill-create" else meta["concurrency"])
    add("patch_vs_create", f"PATCH/s (x{conc[0]}) >= creates/s (x{conc[1]}), scimbus",
        ours_patch, None, None, None,
        ok=None if not ours_patch or not ours_create else ours_patch >= ours_create,
        note=f"creates: {ours_create:.1f}/s" if ours_create else "")

    cpu = {name: cpu_per_write(results["servers"].get(name) or {}).get("all") for name in ("scimbus", *PEERS)}
    ours = cpu["scimbus"]["ours_ms"] if cpu["scimbus"] else None
    add("cpu_per_write", f"CPU per write, front+worker+redis+nginx+reader <= {CPU_LIMIT_MS:.0f} ms",
        ours, cpu["scimgateway"]["total_ms"] if cpu["scimgateway"] else None,
        cpu["peer"]["total_ms"] if cpu["peer"] else None, None,
        ok=None if ours is None else ours <= CPU_LIMIT_MS, unit=" ms",
        note=(f"PostgreSQL adds {cpu['scimbus']['ms'].get('postgres', 0.0):.2f} ms per write"
              if cpu["scimbus"] and "postgres" in cpu["scimbus"]["ms"] else ""))
    for t in results.get("targets") or []:  # issue 7's, restated where issue 19 keeps them
        if t["key"] in ("reads_p99", "memory"):
            out.append({**t, "shown": [t["shown"][0], *(["-", t["shown"][1]])]})
    return out


def render_targets_19(results: dict) -> list[str]:
    targets = results.get("targets_19") or evaluate_targets_19(results)
    lines = [f"== targets of issue 19 (store: {results['meta'].get('store', '?')}, "
             f"{results['meta'].get('cpus')} CPUs, load generator on the same machine)"]
    rows = []
    for t in targets:
        def ratio(v):
            return f"{v:.2f}" if isinstance(v, (int, float)) else "-"
        rows.append([t["target"], *t["shown"], ratio(t.get("ratio_scimgateway")),
                     ratio(t.get("ratio_scim2_server", t.get("ratio"))), _verdict(t["pass"])])
    lines += _table(["target", "scimbus", "scimgateway", "scim2-server", "vs scimgateway", "vs scim2-server",
                     "result"], rows)
    notes = [f"  - {t['key']}: {t['note']}" for t in targets if t.get("note")]
    skipped = [f"  - {PEER_NAMES[k]} not measured: {(results['servers'].get(k) or {}).get('skipped', 'not run')}"
               for k in PEERS if "outcome" not in (results["servers"].get(k) or {})]
    if notes or skipped:
        lines += ["notes:", *skipped, *notes]
    held = sum(1 for t in targets if t["pass"])
    judged = sum(1 for t in targets if t["pass"] is not None)
    lines.append(f"{held} of {judged} targets of issue 19 hold")
    return lines
