from pathlib import Path

import click

from edgeprune._threads import NotStarted
from edgeprune.bench.delegates import describe_delegate
from edgeprune.bench.runner import BenchSettings, bench_many
from edgeprune.boards.reach import expand_targets, resolve_target
from edgeprune.cli._common import (
    Number,
    console,
    delegate_option,
    emit,
    fleet_options,
    fleet_tally,
    host_option,
    json_option,
)
from edgeprune.errors import EdgePruneError, ProfileError
from edgeprune.progress import show

# Lazy imports: the imports inside functions below load rich, which importing this module does not;
# they load only when a function that needs them runs.


@click.command()
@click.option(
    "--target",
    "-t",
    "targets",
    multiple=True,
    metavar="NAME",
    help="Board to measure on (a targets-file entry, a group, or a profile; repeat for several, "
    "--parallel of them at a time), e.g. -t local -t lab-pi.",
)
@fleet_options
@host_option
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--runs",
    type=Number("runs"),
    default=100,
    show_default=True,
    help="Timed runs after warm-up.",
)
@click.option(
    "--warmup",
    type=Number("warmup"),
    default=10,
    show_default=True,
    help="Minimum warm-up runs; warm-up goes on until the timings settle.",
)
@click.option(
    "--threads",
    type=Number("threads"),
    default=0,
    show_default=True,
    help="Runtime threads (0 = the runtime's default).",
)
@click.option("--profile-ops", is_flag=True, help="Also report time per operator type.")
@click.option(
    "--timeout",
    type=Number("timeout"),
    default=600,
    show_default=True,
    metavar="S",
    help="Give up on a board after this many seconds (the agent is stopped).",
)
@click.option("--no-cache", is_flag=True, help="Measure again even when a cached result exists.")
@delegate_option
@click.option(
    "--accept-new-host-key",
    is_flag=True,
    help="Record the key of an SSH board seen for the first time in known_hosts "
    "(a CHANGED key is always refused).",
)
@json_option
def bench(
    targets,
    targets_from,
    parallel,
    canary,
    host,
    model,
    runs,
    warmup,
    threads,
    profile_ops,
    timeout,
    no_cache,
    delegate,
    accept_new_host_key,
    as_json,
):
    """Measure MODEL (.onnx or .tflite) on one or more boards.

    \b
    Examples:
      edgeprune bench --target local model.onnx
      edgeprune bench --target raspberry-pi-5 --host pi@192.168.1.20 model.tflite
      edgeprune bench -t lab-nano -t lab-pi -t local model.onnx --runs 200 --json
    """
    targets = expand_targets(targets, targets_from=targets_from)
    if host and len(targets) > 1:
        raise ProfileError(
            "--host names one board; with several --target, put each in your targets file"
        )
    reaches = [resolve_target(t, host=host, delegate=delegate) for t in targets]
    settings = BenchSettings(
        runs=runs, warmup=warmup, threads=threads, profile_ops=profile_ops, timeout_s=timeout
    )

    with show():
        outcomes = bench_many(
            reaches,
            Path(model),
            settings=settings,
            use_cache=not no_cache,
            accept_new_host_key=accept_new_host_key,
            parallel=parallel,
            canary=canary,
        )

    failed = [
        (r.name, o) for r, o in zip(reaches, outcomes, strict=True) if isinstance(o, EdgePruneError)
    ]
    skipped = [r.name for r, o in zip(reaches, outcomes, strict=True) if isinstance(o, NotStarted)]
    if len(reaches) == 1 and failed:
        raise failed[0][1]
    docs = [
        {"target": r.name, "state": "failed", "error": str(o)} if isinstance(o, EdgePruneError)
        else {"target": r.name, "state": "not started", "error": str(o)} if isinstance(o, NotStarted)
        else o.to_dict()
        for r, o in zip(reaches, outcomes, strict=True)
    ]
    emit(
        docs[0] if len(docs) == 1 else {"results": docs},
        as_json=as_json,
        human=lambda _: _table(reaches, outcomes, profile_ops),
        ok=not failed and not skipped,
    )
    if len(reaches) > 1:
        click.echo(fleet_tally(len(reaches), len(failed), len(skipped), parallel), err=True)
    if failed or skipped:
        for name, exc in failed:
            click.echo(
                f"error: {exc}" if str(exc).startswith(name) else f"error: {name}: {exc}", err=True
            )
        for name in skipped:
            click.echo(f"error: {name}: not started: canary failed", err=True)
        raise click.exceptions.Exit(1)


def _table(reaches, outcomes, profile_ops) -> None:
    from rich.table import Table


    ok = [
        (r, o) for r, o in zip(reaches, outcomes, strict=True) if not isinstance(o, EdgePruneError)
    ]
    if not ok:
        return
    table = Table(title="Latency (ms)")
    table.add_column("")
    for r, o in ok:
        table.add_column(r.name + (" (cached)" if o.cached else ""), justify="right")

    def row(label, fn):
        table.add_row(label, *[fn(o) for _, o in ok])

    def thr(o):
        return "unknown" if o.throttled is None else ("YES" if o.throttled else "no")

    row("board", lambda o: f"{o.board.get('hostname')} ({o.board.get('machine')})")
    row("cpu", lambda o: f"{o.board.get('cpu_model')} x{o.board.get('cores')}")
    row("runtime", lambda o: f"{o.runtime} {o.runtime_version}")
    if any(o.delegate for _, o in ok):
        row("delegate", lambda o: describe_delegate(o.delegate) if o.delegate else "-")
    for k in ("p50", "p90", "p99", "min"):
        row(k, lambda o, k=k: _fig(o.latency_ms.get(k), ".3f"))
    row("mean ± std", lambda o: f"{_fig(o.latency_ms.get('mean'), '.3f')} ± {_fig(o.latency_ms.get('std'), '.3f')}")
    row(
        "runs / warm-up",
        lambda o: f"{o.runs} / {o.warmup_runs}{'' if o.warmup_settled else ' (not settled)'}",
    )
    row("model load", lambda o: _fig(o.load_ms, ".1f"))
    row("first inference", lambda o: _fig(o.first_inference_ms, ".3f"))
    row("peak memory", lambda o: "?" if o.peak_memory_mb is None else f"{o.peak_memory_mb:.0f} MB")
    row("throttled", thr)
    row(
        "CPU busy by others",
        lambda o: "?" if o.other_busy_cores is None else f"{o.other_busy_cores:.2f} cores",
    )
    con = console()
    con.print(table)
    for r, o in ok:
        if o.missing:
            con.print(f"{r.name}: not given by its benchmark_model: {', '.join(o.missing)}")
    for r, o in ok:
        if o.other_busy_cores is not None and o.other_busy_cores > 0.5:
            con.print(
                f"note: other processes kept {o.other_busy_cores:.1f} CPU cores busy on {r.name} "
                "while it was measured: its timings are contended"
            )
    for r, o in ok:
        if text := quota_note(r.name, o):
            con.print(text)
    if profile_ops:
        for r, o in ok:
            ops = (o.op_profile or {}).get("by_op_type") or []
            if not ops:
                con.print(
                    f"{r.name}: no per-op profile ({(o.op_profile or {}).get('reason', 'not offered')})"
                )
                continue
            t = Table(title=f"{r.name}: time per operator type")
            for c in ("op type", "ms/run", "calls/run", "share"):
                t.add_column(c, justify="right" if c != "op type" else "left")
            for op in ops[:15]:
                t.add_row(
                    str(op["op_type"]),
                    f"{op['ms_per_run']:.3f}",
                    f"{op['calls_per_run']:.0f}",
                    f"{100 * op['share']:.1f} %",
                )
            con.print(t)


def _fig(value, fmt: str) -> str:
    """A figure, or 'missing' where the board's runner did not give it (phones: benchmark_model)."""
    return "missing" if value is None else format(value, fmt)


def quota_note(name: str, o) -> str | None:
    """On a board with a CPU quota, which figure is which (see edgeprune.latency.judge): run back to back,
    runs that straddle a throttled period wait for the next one, so the mean is what the board sustains and
    the p50 sits nearer one unthrottled run."""
    quota = (o.board or {}).get("cpu_quota")
    mean, p50 = o.latency_ms.get("mean"), o.latency_ms.get("p50")
    if not isinstance(quota, (int, float)) or quota <= 0 or mean is None or p50 is None:
        return None
    text = f"note: {name} runs under a CPU quota of {quota:g} CPU: back to back it sustains the mean, {mean:.3f} ms"
    if p50 < 0.8 * mean:
        text += f"; the p50, {p50:.3f} ms, is nearer one unthrottled run"
    return text + ". edgeprune prune and deploy judge a budget on this board by the sustained figure."
