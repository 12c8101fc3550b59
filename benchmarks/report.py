"""The markdown page of a benchmark run, made from the raw figures (results.json's content).

Formatting only: every number shown here is in the JSON; nothing is computed that is not.
"""

from __future__ import annotations

from typing import Any

CONTENDER_TITLES = {
    "runner": "this runner",
    "bfl_loop": "BFL documented loop",
    "replicate_client": "official replicate client",
}


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _pair(a: Any, b: Any, digits: int = 3) -> str:
    return f"{_num(a, digits)} / {_num(b, digits)}"


def workload_table(entry: dict[str, Any]) -> list[str]:
    workload = entry["workload"]
    lines = [f"## {workload['title']}", ""]
    lines += [f"- {note}" for note in workload["notes"]]
    lines += [
        f"- {workload['jobs']:,} jobs; time scale {workload['time_scale']} (every time below is "
        f"in simulator seconds: divide by {workload['time_scale']} for real-world terms)",
        "",
        "| contender | done | makespan (s) | lower bound (s) | makespan / LB "
        "| status requests / job | 429s | duplicate creates "
        "| ready→detected p50 / p95 (s) | ready→on disk p50 / p95 (s) "
        "| CPU s / job | peak RSS (MB) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, f in entry["contenders"].items():
        if "error" in f and "done" not in f:
            lines.append(f"| {CONTENDER_TITLES.get(name, name)} | failed: {f['error']} |")
            continue
        lines.append(
            "| "
            + " | ".join(
                [
                    CONTENDER_TITLES.get(name, name),
                    f"{f['done']:,}/{f['jobs']:,}",
                    _num(f["makespan_s"], 1),
                    _num(f["lower_bound_s"], 1),
                    _num(f["makespan_over_lb"], 3),
                    _num(f["status_requests_per_job"], 2),
                    _num(f["http_429"]),
                    _num(f["duplicate_creates"]),
                    _pair(f["ready_to_detected_p50_s"], f["ready_to_detected_p95_s"]),
                    _pair(f["ready_to_disk_p50_s"], f["ready_to_disk_p95_s"]),
                    _num(f["cpu_seconds_per_job"], 4),
                    _num(f["peak_rss_mb"], 1),
                ]
            )
            + " |"
        )
    lines.append("")
    return lines


def scale_table(scale: dict[str, Any]) -> list[str]:
    if "error" in scale:
        return ["## Scale (this runner alone)", "", f"failed: {scale['error']}", ""]
    enqueue, big = scale["enqueue"], scale["big_database"]
    status, rss, e2e = scale["status"], scale["worker_rss"], scale["end_to_end"]
    return [
        "## Scale (this runner alone, real time)",
        "",
        "| figure | value |",
        "|---|--:|",
        f"| enqueue {enqueue['jobs']:,} jobs (`runner submit`, wall) | "
        f"{_num(enqueue['seconds'], 1)} s |",
        f"| `runner status` on a {big['jobs']:,}-job database (wall) | "
        f"{_num(status['seconds'], 2)} s |",
        f"| peak RSS of `runner work` with {big['jobs']:,} jobs queued "
        f"({_num(rss['held_seconds'], 0)} s, then SIGINT) | {_num(rss['peak_rss_mb'], 1)} MB |",
        *_claim_round_row(scale.get("claim_round"), big["jobs"]),
        f"| jobs per second end to end, no delays and no limits ({e2e['jobs']:,} jobs, "
        f"wall of `runner run`) | {_num(e2e['jobs_per_second'], 1)} |",
        f"| the same, first create to last file | "
        f"{_num(e2e['jobs_per_second_first_create_to_last_file'], 1)} |",
        f"| start-up and finish of that run (wall less first create to last file) | "
        f"{_num(e2e.get('start_and_finish_seconds'), 2)} s |",
        f"| CPU s per job in that run | {_num(e2e['cpu_seconds_per_job'], 4)} |",
        *_workers_rows(scale.get("postgres_workers", {"error": "not run"})),
        "",
    ]


def _claim_round_row(figures: dict[str, Any] | None, jobs: int) -> list[str]:
    if figures is None:
        return []
    return [
        f"| a round of claims with {jobs:,} jobs queued: when each state is due, then 24 "
        f"claimed to submit (median of {figures['repeats']}) | "
        f"{_num(figures['due_by_state_ms'], 2)} + {_num(figures['claim_24_submits_ms'], 2)} ms |"
    ]


def _workers_rows(figures: dict[str, Any]) -> list[str]:
    if "error" in figures:
        return [f"| jobs per second through PostgreSQL | not measured: {figures['error']} |"]
    return [
        f"| jobs per second through PostgreSQL, {f['workers']} `runner work` "
        f"({f['done']:,}/{f['jobs']:,} done, no delays) | {_num(f['jobs_per_second'], 1)} |"
        for f in figures.values()
    ]


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# runner benchmark",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Run {meta['date']} on {meta['cpu_count']} cores, {meta['platform']}, Python "
        f"{meta['python']}; runner at {meta['runner_commit']}; took "
        f"{_num(meta['run_seconds'], 0)} s. CPU busy on average: {_num(meta['benchmark_cores'])} "
        f"cores by the benchmark, {_num(meta['other_cores'])} by other work on the machine "
        "(which competed with it and skews the figures when not near zero).",
        "",
        *(
            [
                "**runner's source changed while this ran: its rows mix two versions.**",
                "",
            ]
            if meta.get("runner_changed_during_run")
            else []
        ),
        "Each contender ran alone against a fresh simulator subprocess. makespan = last file on "
        "disk minus first create sent; LB = the lower bound the provider's limits allow, "
        "from the generation times the simulator recorded; ready = the simulator's completion "
        "time of the generation. Status requests and 429s are the simulator's counts; CPU and "
        "peak RSS are the contender process's own (wait4), start-up included.",
        "",
    ]
    for entry in results["workloads"].values():
        lines += workload_table(entry)
    lines += scale_table(results["scale"])
    return "\n".join(lines)
