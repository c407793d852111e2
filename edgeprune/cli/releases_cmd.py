"""``edgeprune releases`` and ``edgeprune rollback``: what a board has shipped, and going back."""

import click

from edgeprune.cli._common import Number, emit, host_option, json_option, target_option
from edgeprune.progress import show

# Lazy imports: the imports inside functions below load numpy, which importing this module does not;
# they load only when a function that needs them runs.

accept_option = click.option(
    "--accept-new-host-key",
    is_flag=True,
    help="Record the key of an SSH board seen for the first time in known_hosts "
    "(a CHANGED key is always refused).",
)


@click.command()
@target_option
@host_option
@accept_option
@json_option
def releases(target, host, accept_new_host_key, as_json):
    """List the releases in a board's deploy folder, and which one is current.

    \b
    Examples:
      edgeprune releases --target lab-pi
      edgeprune releases --target jetson-nano --host nvidia@10.0.0.12 --json
    """
    from edgeprune.ship import list_releases

    with show():
        listing = list_releases(target, host=host, accept_new_host_key=accept_new_host_key)
    doc = listing.to_dict()
    for r in doc["releases"]:
        r.pop("manifest", None)
    emit(doc, as_json=as_json, human=lambda _: _table(listing))


def _accuracy(value) -> str:
    if isinstance(value, dict):
        shown = [(k, v) for k, v in value.items() if isinstance(v, int | float)][:2]
        return ", ".join(f"{k} {v:.4g}" for k, v in shown) or "accuracy -"
    return f"accuracy {value:.4g}" if isinstance(value, int | float) else "accuracy -"


def _table(listing) -> None:
    """One line per release, newest first (ids are UTC time + sha256 prefix: no extra columns)."""
    if not listing.releases:
        click.echo(f"{listing.target}: no releases in {listing.deploy_dir}")
        return
    click.echo(f"{listing.target}: releases in {listing.deploy_dir}")
    for r in reversed(listing.releases):
        mark = "current" if r.current else ("previous" if r.previous else "")
        parts = [
            f"{mark:8}",
            r.id,
            f"{r.format or '?'} {r.precision or '?'}",
            f"p50 {r.latency_ms:.3f} ms" if r.latency_ms is not None else "p50 -",
            _accuracy(r.accuracy),
            f"{r.bytes / 2**20:.2f} MiB" if r.bytes is not None else "",
        ]
        click.echo("  " + "  ".join(p for p in parts if p))
    if listing.lock:
        from edgeprune.ship.lock import describe

        age = listing.lock.get("age_s")
        click.echo(f"locked: {describe(listing.lock.get('owner'))}"
                   + (f", refreshed {age:.0f} s ago" if isinstance(age, int | float) else ""))


@click.command()
@target_option
@host_option
@click.option("--to", "to", default=None, metavar="ID",
              help="The release to switch to (default: the previous one; see `edgeprune releases`).")
@click.option("--wait", type=Number("wait"), default=0, show_default=True, metavar="S",
              help="Wait this long for another deploy's lock on the board.")
@accept_option
@json_option
def rollback(target, host, to, wait, accept_new_host_key, as_json):
    """Switch a board back to an earlier release, atomically, after checking it on the board.

    The release's model is checked against its manifest's sha256, loaded with the
    board's runtime and run on the check inputs stored at ship time; only if its
    outputs match the stored ones is `current` switched. The release left becomes
    `previous`, so running rollback again goes back.

    \b
    Examples:
      edgeprune rollback --target lab-pi
      edgeprune rollback --target lab-pi --to 20261128-101502-3f2a9c1d --json
    """
    from edgeprune.ship import rollback as do_rollback

    with show():
        result = do_rollback(target, to=to, host=host, lock_wait_s=wait,
                             accept_new_host_key=accept_new_host_key)

    def human(_):
        for note in result.notes:
            click.echo(f"note: {note}")
        if result.changed:
            worst = max((o.get("max_abs") or 0 for o in result.check["outputs"]), default=0)
            click.echo(
                f"{result.target} now runs {result.release} (was {result.rolled_back_from or 'none'}); "
                f"on-board check passed: {result.check['samples']} samples, max abs error {worst:.3g}"
            )

    emit(result.to_dict(), as_json=as_json, human=human)
