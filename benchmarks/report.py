"""RESULTS.md from a results JSON: one table per workload, the machine, and the targets."""

from __future__ import annotations

from typing import Any


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _machine(m: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    return (f"- {m['usable_cores']} usable cores ({m['logical_cores']} logical), {m['ram_gib']} GiB RAM, "
            f"{m['cpu']}\n- {m['os']}, Python {m['python']}\n- {versions}")


def _w1(w1: dict[str, Any]) -> str:
    if "error" in w1:
        return f"Not run: {w1['error']}"
    keys = [k for k in w1 if k.endswith("_s")]
    rows = [[k.removesuffix("_s"), w1[k], round(w1["n"] * (2 if "2n" in k else 1) / w1[k], 1) if w1[k] else None]
            for k in keys]
    ratios = ", ".join(f"{k} = {w1[k]}" for k in w1 if "_over_" in k)
    return (f"{w1['n']} uint16 {w1['size']}x{w1['size']} images, best of {w1['repeat']}.\n\n"
            + _table(["measure", "seconds", "images/s"], rows) + f"\n\nRatios: {ratios}.")


def _w2(w2: dict[str, Any]) -> str:
    plate = w2["plate"]
    sizes = ", ".join(f"{k} = {v} wells" for k, v in plate["wells"].items())
    head = (f"Plates {sizes}; {plate['sites']} sites x {plate['channels']} channels of "
            f"{plate['image_size']}x{plate['image_size']} {plate['dtype']}; {w2['n_workers']} processes per system. "
            f"{w2['warm_up']}.\n\n")
    headers = ["system", "size", "output", "images", "wall s", "images/s", "MB/s", "s/well", "per-well vs S",
               "worker peak RSS MB", "main peak RSS MB", "vs baseline", "vs reference", "zarr/disk time", "cells"]
    rows = [[r["system"], r["size"], r["backend"], r["images"], r["wall_s"], r["images_per_s"], r["mb_per_s"],
             r["s_per_well"], r.get("per_well_vs_first_size"), r["peak_rss_worker_mb"], r["peak_rss_main_mb"],
             r.get("ratio_to_baseline"), r.get("ratio_to_reference"), r.get("zarr_over_disk"), r["cells"]]
            for r in w2["rows"] if "wall_s" in r]
    notes = [f"- {r['system']} {r.get('size', '')}: {r['message']}" for r in w2["rows"] if "wall_s" not in r]
    ref = w2.get("reference")
    if ref and ref.get("status") != "ran":
        notes.append(f"- reference system: {ref.get('status')}: {ref.get('message')}")
    return head + _table(headers, rows) + ("\n\n" + "\n".join(notes) if notes else "")


def _w3(w3: dict[str, Any]) -> str:
    rows = [[r["backend"], r["wells"], r["planes"], r["tasks"], r["compile_s"]] for r in w3["rows"]]
    return _table(["output", "wells", "planes", "tasks", "compile s (best)"], rows)


def _w4(w4: dict[str, Any]) -> str:
    head = (f"{w4['wells']} wells, {w4['images']} images, {w4['plate_gib']} GiB of pixels; {w4['n_workers']} workers "
            f"x {w4['worker_limit_mb']} MiB memory_limit (plate = {w4['plate_over_total_limit']}x their total); "
            f"VFSConfig(memory_limit_gb={w4['vfs_memory_limit_gb']}).\n\n")
    if not w4.get("completed"):
        return head + f"Did not complete: {w4.get('error')}"
    summary = (f"Completed in {w4['wall_s']} s ({w4['images_per_s']} images/s); intermediates through the scratch "
               f"store: {w4['scratch_store'] or 'no (worker memory, spilling)'}; workers restarted: "
               f"{w4['restarted_workers']}; every worker under its limit: {w4['all_workers_under_limit']}.\n\n")
    rows = [[p["process"], p["pid"], p["peak_rss_mb"],
             w4["worker_limit_mb"] if p["process"].startswith("dask-worker") else "–"] for p in w4["processes"]]
    return head + summary + _table(["process", "pid", "peak RSS MiB", "limit MiB"], rows)


def _targets(results: dict[str, Any]) -> str:
    lines = []
    w2 = results.get("workloads", {}).get("W2")
    if w2:
        rows = [r for r in w2["rows"] if "wall_s" in r]
        hm = [r for r in rows if r["system"] == "hcsgraph" and r["size"] == "M"]
        for r in hm:
            lines.append(f"- hcsgraph W2-M ({r['backend']}) throughput vs baseline: {r['ratio_to_baseline']} "
                         f"(target >= 0.85)")
        for r in rows:
            if r["backend"] == "zarr" and r.get("zarr_over_disk") is not None:
                lines.append(f"- {r['system']} {r['size']}: zarr/disk wall time {r['zarr_over_disk']} "
                             "(target 0.85..1.15)")
        sizes = list(w2["plate"]["wells"])
        for r in rows:
            if r["size"] == sizes[-1] and len(sizes) > 1:
                lines.append(f"- {r['system']} {r['backend']}: time per well {sizes[-1]} / {sizes[0]} = "
                             f"{r['per_well_vs_first_size']} (target 0.8..1.2)")
    w3 = results.get("workloads", {}).get("W3")
    if w3:
        lines += [f"- W3 compile ({r['backend']}): {r['compile_s']} s (target < 2 s)" for r in w3["rows"]]
    w4 = results.get("workloads", {}).get("W4")
    if w4:
        lines.append(f"- W4 completed: {w4.get('completed')}; every worker under its limit: "
                     f"{w4.get('all_workers_under_limit')}")
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    """The whole RESULTS.md text."""
    w = results.get("workloads", {})
    parts = [
        "# Benchmark results",
        f"Run {results['date']} with `{results['command']}` ({results['total_s']} s in all). "
        "Generated by `python -m benchmarks.run`; see [README.md](README.md) for what each workload measures.",
        "## Machine", _machine(results["machine"]),
        "## Targets", _targets(results) or "No workload with a target ran.",
    ]
    for key, title, body in (("W1", "W1: FileManager I/O", _w1), ("W2", "W2: cell-count pipeline", _w2),
                             ("W3", "W3: compile only", _w3), ("W4", "W4: memory", _w4)):
        if key in w:
            parts += [f"## {title}", body(w[key])]
    return "\n\n".join(parts) + "\n"
