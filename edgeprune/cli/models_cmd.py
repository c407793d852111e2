"""``edgeprune models``: the built-in reference models, with their size and cost."""

from __future__ import annotations

import click

from edgeprune.cli._common import emit, json_option


@click.command()
@json_option
def models(as_json: bool) -> None:
    """List the built-in reference models (name, task, input, params, MACs, weights)."""
    from edgeprune.models import build, list_models, pretrained_available
    from edgeprune.models.stats import count_macs_params

    rows = []
    for info in list_models():
        macs, params = count_macs_params(build(info.name, pretrained=False), info.input_shape)
        rows.append(
            {
                "name": info.name,
                "task": info.task,
                "input_shape": list(info.input_shape),
                "params": params,
                "macs": macs,
                "pretrained": pretrained_available(info.name),
                "description": info.description,
            }
        )
    if as_json:
        emit({"models": rows}, as_json=True, human=_table)
    else:
        _table(rows)


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _table(rows: list[dict]) -> None:
    click.echo(
        f"{'name':12s} {'task':8s} {'input':12s} {'params':>8s} {'MACs':>8s}  pretrained weights"
    )
    for r in rows:
        shape = "x".join(str(s) for s in r["input_shape"])
        weights = "yes" if r["pretrained"] else "no (random init)"
        click.echo(
            f"{r['name']:12s} {r['task']:8s} {shape:12s} {_si(r['params']):>8s} {_si(r['macs']):>8s}  {weights}"
        )
