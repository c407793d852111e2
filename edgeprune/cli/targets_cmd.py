import click

from edgeprune.boards.profiles import list_profiles, load_profile
from edgeprune.boards.reach import load_targets, targets_file
from edgeprune.cli._common import console, emit, json_option

# Lazy imports: the imports inside functions below load rich, which importing this module does not;
# they load only when a function that needs them runs.


@click.group()
def targets() -> None:
    """List and show the boards edgeprune knows (its device profiles).

    \b
    Profiles ship in device_profiles/; add your own boards as TOML or YAML
    files in a folder named by $EDGEPRUNE_PROFILES or by `profiles_dirs` in
    ~/.config/edgeprune/config.toml. Every file is validated on load.

    \b
    Examples:
      edgeprune targets list
      edgeprune targets show raspberry-pi-5
      edgeprune targets show local --json     # this machine, measured
    """


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{value}{unit}"


def _summary(data: dict) -> dict:
    peak = data["peak"]
    return {
        "name": data["name"],
        "title": data["title"],
        "runtime": data["runtime"]["default"],
        "export": f"{data['export']['format']} {data['export']['precision']}",
        "precisions": data["runtime"]["precisions"],
        "alignment": data["alignment"]["channels"],
        "peak": {k: peak[k] for k in ("fp32_gflops", "fp16_gflops", "int8_gops") if k in peak},
        "bandwidth_gbps": data["memory"].get("bandwidth_gbps"),
        "transport": data["reach"]["transport"],
        "python": data["reach"].get("python"),
    }


@targets.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List every known board with its runtime, export default and key figures.

    Also lists the entries of your targets file (see `edgeprune bench --help`
    and the README's "How a target is reached"). `--json` gives
    {"profiles": [...], "targets": [...]}.
    """
    rows = [dict(_summary(p.resolved()), file=str(p.path)) for p in list_profiles()]
    # The user's own boards (targets file): name -> profile and where it is.
    tfile = targets_file()
    mine = [
        {"target": name, "profile": entry.get("profile", name), "host": entry.get("host"),
         "user": entry.get("user"), "port": entry.get("port"), "file": str(tfile)}
        for name, entry in load_targets().items() if "targets" not in entry  # a group: its boards are listed
    ]

    def human(rows: list[dict]) -> None:
        from rich.table import Table

        table = Table(title="Boards (edgeprune targets show NAME for details and sources)")
        table.add_column("name", no_wrap=True)
        for col in ("runtime", "export", "align", "peak", "mem BW", "via", "board"):
            table.add_column(col)
        for r in rows:
            peak = r["peak"]
            if "int8_gops" in peak:
                best = f"{_fmt(peak['int8_gops'])} GOPS int8"
            elif peak:
                prec = "fp16" if "fp16_gflops" in peak else "fp32"
                best = f"{_fmt(peak[prec + '_gflops'])} GFLOPS {prec}"
            else:
                best = "not public"
            table.add_row(
                r["name"], r["runtime"], r["export"], str(r["alignment"]), best,
                _fmt(r["bandwidth_gbps"], " GB/s"), r["transport"], r["title"],
            )
        out = console()
        out.print(table)
        if mine:
            yours = Table(title=f"Your targets ({tfile})")
            for col in ("target", "profile", "host", "user", "port"):
                yours.add_column(col)
            for m in mine:
                yours.add_row(*(_fmt(m[c]) for c in ("target", "profile", "host", "user", "port")))
            out.print(yours)

    if as_json:
        emit({"profiles": rows, "targets": mine}, as_json=True, human=human)
    else:
        human(rows)


@targets.command("show")
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """Show one board's profile, every figure with its source.

    For `local`, the compute and bandwidth figures are measured on this
    machine the first time (about 2 s) and cached.
    """
    profile = load_profile(name)
    data = profile.resolved()
    data["file"] = str(profile.path)

    def human(data: dict) -> None:
        from rich.table import Table

        table = Table(title=f"{data['name']}: {data['title']}", show_lines=False)
        table.add_column("section")
        table.add_column("figures")
        table.add_column("source", style="dim")
        for section, values in data.items():
            if not isinstance(values, dict):
                continue
            figures = "; ".join(
                f"{k}={', '.join(v) if isinstance(v, list) else _fmt(v)}"
                for k, v in values.items() if k != "source"
            )
            table.add_row(section, figures, values.get("source", ""))
        out = console()
        out.print(table)
        if "notes" in data:
            out.print(f"note: {data['notes']}")
        out.print(f"file: {data['file']}", style="dim")

    emit(data, as_json=as_json, human=human)
