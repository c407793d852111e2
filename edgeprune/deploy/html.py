"""A self-contained HTML report of a deploy, for people: one file, inline SVG plots, no network.

:func:`render_html` turns the deploy report (the plain dict that ``deploy.json``
holds, see :mod:`edgeprune.deploy`) into one HTML page with:

- the headline: shipped or not, and why, in words (never "passed" over a failure);
- latency per closed-loop round against the budget, measured on the board;
- accuracy per stage (original, pruned, fine-tuned, exported) on held-out data;
- size per stage (file bytes, parameters, MACs);
- channels kept per layer against the original;
- the board's facts as the agent reported them, and the release shipped.

The plots are drawn here as inline SVG (no matplotlib, no JavaScript, no web fonts), so
the page opens anywhere, offline, and a browser has nothing to fetch or run. Every
value comes from the dict; missing sections are left out with a note, never invented.
Text from the board or the user is HTML-escaped.

Example::

    html = render_html(json.loads(Path("out/deploy.json").read_text()))
    Path("out/report.html").write_text(html)
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from edgeprune.deploy.verdict import outcome

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'DejaVu Sans',sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
main{max-width:1080px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dde3;padding-bottom:4px}
.sub{color:#5b6570}
.banner{padding:14px 16px;border-radius:6px;margin:16px 0;font-size:15px}
.ok{background:#e3f4e8;border:1px solid #7cc293}.fail{background:#fbe4e4;border:1px solid #e08c8c}
.warn{background:#fff6dc;border:1px solid #e6c35c}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px;min-width:50%}
th,td{border:1px solid #d8dde3;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:16px}.card{display:inline-block;background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:10px}
.card svg{display:block}
svg text{font:11px 'DejaVu Sans',sans-serif;fill:#1d232a}
code{background:#eef1f4;padding:1px 4px;border-radius:3px}
ul.warnings li{margin:2px 0}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, spec: str = ".3g", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _e(value)
    return f"{format(value, spec)}{unit}"


def _pct(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{100 * value:.2f} %"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in numeric else ""
            cells.append(f"<td{cls}>{cell if isinstance(cell, _Raw) else _e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Raw(str):
    """Already-escaped HTML for a table cell."""


# -- SVG charts ------------------------------------------------------------------


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * exp >= value:
            return step * exp
    return 10 * exp


def bar_chart(labels: Sequence[str], series: dict[str, Sequence[float | None]], *, title: str,
              unit: str = "", width: int = 480, height: int = 240, ymin: float | None = None) -> str:
    """Grouped vertical bars, one group per label, one colour per series (inline SVG).

    ``height`` sets the plot area (``height - 88`` px); the SVG is as tall as its labels need.
    Labels wrap onto two lines to fit their slot; a missing value is marked "n/a".
    """
    values = [v for vs in series.values() for v in vs if isinstance(v, (int, float))]
    if not labels or not values:
        return ""
    top = _nice_max(max(values))
    bottom = ymin if ymin is not None else 0.0
    if bottom >= top:
        bottom = 0.0
    left, right, tpad = 64, 10, 26
    pw, ph = width - left - right, height - tpad - 62
    n, k = len(labels), max(len(series), 1)
    slot = pw / n
    bw = max(4.0, slot * 0.8 / k)
    wrapped = [_wrap(label, max(4, int(slot / 6.6))) for label in labels]
    lines = max(len(w) for w in wrapped)
    legend = len(series) > 1
    height = int(tpad + ph + 8 + 14 * lines + (22 if legend else 4))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{_e(title)}"><text x="{left}" y="16" font-weight="bold">{_e(title)}</text>']
    for i in range(5):
        val = bottom + (top - bottom) * i / 4
        y = tpad + ph - ph * i / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e7eb"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_num(val, ".3g")}{_e(unit)}</text>')
    for j, (name, vs) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        for i, v in enumerate(vs):
            if not isinstance(v, (int, float)):
                x = left + i * slot + (slot - bw * k) / 2 + (j + 0.5) * bw
                out.append(f'<text x="{x:.1f}" y="{tpad + ph - 4}" text-anchor="middle" fill="#8a949e">n/a'
                           f'<title>{_e(name)} {_e(labels[i])}: no figure</title></text>')
                continue
            frac = (max(min(v, top), bottom) - bottom) / (top - bottom)
            x = left + i * slot + (slot - bw * k) / 2 + j * bw
            h = ph * frac
            out.append(f'<rect x="{x:.1f}" y="{tpad + ph - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                       f'fill="{colour}"><title>{_e(name)} {_e(labels[i])}: {_num(v, ".4g")}{_e(unit)}</title></rect>')
    for i, (label, rows) in enumerate(zip(labels, wrapped, strict=True)):
        x = left + i * slot + slot / 2
        spans = "".join(f'<tspan x="{x:.1f}" dy="{0 if r == 0 else 13}">{_e(line)}</tspan>'
                        for r, line in enumerate(rows))
        out.append(f'<text x="{x:.1f}" y="{tpad + ph + 14}" text-anchor="middle"><title>{_e(label)}</title>{spans}</text>')
    if legend:
        x = left
        for j, name in enumerate(series):
            out.append(f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
                       f'<text x="{x + 14}" y="{height - 7}">{_e(name)}</text>')
            x += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def line_chart(xs: Sequence[float], series: dict[str, Sequence[float | None]], *, title: str,
               hlines: dict[str, float] | None = None, unit: str = "", xlabel: str = "",
               width: int = 480, height: int = 240) -> str:
    """Lines with markers over ``xs``; ``hlines`` are dashed reference levels (e.g. the budget)."""
    values = [v for vs in series.values() for v in vs if isinstance(v, (int, float))]
    values += list((hlines or {}).values())
    if not xs or not values:
        return ""
    top = _nice_max(max(values) * 1.05)
    left, right, tpad, bpad = 64, 10, 26, 48
    pw, ph = width - left - right, height - tpad - bpad
    x0, x1 = min(xs), max(xs)
    span = (x1 - x0) or 1.0

    def px(x: float) -> float:
        return left + (pw * (x - x0) / span if x1 > x0 else pw / 2)

    def py(y: float) -> float:
        return tpad + ph - ph * min(y, top) / top

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{_e(title)}"><text x="{left}" y="16" font-weight="bold">{_e(title)}</text>']
    for i in range(5):
        val = top * i / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(val):.1f}" y2="{py(val):.1f}" stroke="#e3e7eb"/>'
                   f'<text x="{left - 4}" y="{py(val) + 4:.1f}" text-anchor="end">{_num(val, ".3g")}{_e(unit)}</text>')
    for x in xs:
        out.append(f'<text x="{px(x):.1f}" y="{tpad + ph + 14}" text-anchor="middle">{_num(x, "g")}</text>')
    if xlabel:
        out.append(f'<text x="{left + pw / 2:.1f}" y="{tpad + ph + 30}" text-anchor="middle">{_e(xlabel)}</text>')
    for name, level in (hlines or {}).items():
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(level):.1f}" y2="{py(level):.1f}" '
                   f'stroke="#c44e52" stroke-dasharray="5,4"><title>{_e(name)}: {_num(level, ".4g")}{_e(unit)}</title></line>'
                   f'<text x="{left + pw - 2}" y="{py(level) - 4:.1f}" text-anchor="end" fill="#c44e52">{_e(name)}</text>')
    legend_x = left
    for j, (name, vs) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        pts = [(px(x), py(v)) for x, v in zip(xs, vs, strict=False) if isinstance(v, (int, float))]
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for (x, y), (xv, v) in zip(pts, [(x, v) for x, v in zip(xs, vs, strict=False) if isinstance(v, (int, float))],
                                   strict=True):
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"><title>{_e(name)} '
                       f'{_num(xv, "g")}: {_num(v, ".4g")}{_e(unit)}</title></circle>')
        out.append(f'<rect x="{legend_x}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{legend_x + 14}" y="{height - 5}">{_e(name)}</text>')
        legend_x += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def channel_chart(rows: Sequence[dict[str, Any]], *, title: str, width: int = 1000, bar_h: int = 12) -> str:
    """Horizontal bars per layer group: the original count (light) and the count kept (dark)."""
    rows = [r for r in rows if isinstance(r.get("channels"), int) and r["channels"] > 0]
    if not rows:
        return ""
    label_w, right = 240, 70
    pw = width - label_w - right
    top = max(r["channels"] for r in rows)
    height = 30 + len(rows) * (bar_h + 4) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{_e(title)}"><text x="4" y="16" font-weight="bold">{_e(title)}</text>']
    for i, r in enumerate(rows):
        y = 28 + i * (bar_h + 4)
        full = pw * r["channels"] / top
        kept = pw * min(r.get("keep", r["channels"]), r["channels"]) / top
        out.append(f'<text x="{label_w - 6}" y="{y + bar_h - 2}" text-anchor="end">{_e(_short(r.get("group", ""), 36))}</text>'
                   f'<rect x="{label_w}" y="{y}" width="{full:.1f}" height="{bar_h}" fill="#d6dde6"/>'
                   f'<rect x="{label_w}" y="{y}" width="{kept:.1f}" height="{bar_h}" fill="#4c72b0">'
                   f'<title>{_e(r.get("group"))}: keeps {r.get("keep")} of {r["channels"]}</title></rect>'
                   f'<text x="{label_w + full + 4:.1f}" y="{y + bar_h - 2}">{_e(r.get("keep"))}/{_e(r["channels"])}</text>')
    out.append("</svg>")
    return "".join(out)


def _short(text: Any, n: int) -> str:
    text = str(text)
    return text if len(text) <= n else "…" + text[-(n - 1):]


def _wrap(text: Any, n: int) -> list[str]:
    """``text`` on at most two lines of about ``n`` characters, broken at spaces; the rest elided."""
    words, lines = str(text).split(), [""]
    for word in words:
        if lines[-1] and len(lines[-1]) + 1 + len(word) > n:
            if len(lines) == 2:
                lines[-1] += " " + word  # elided below
                continue
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}" if lines[-1] else word
    return [line if len(line) <= n else line[:n - 1] + "…" for line in lines]


# -- the page ------------------------------------------------------------------------


def _headline(rep: dict[str, Any]) -> str:
    """The banner: the same words as the terminal's and report.md's headline (deploy.verdict.outcome)."""
    out = outcome(rep)
    cls = {"ok": "ok", "warn": "warn", "fail": "fail"}[out["level"]]
    head, _, rest = out["text"].partition(": ")
    return f'<div class="banner {cls}"><b>{_e(head)}.</b> {_e(rest)}</div>'


def _section_latency(rep: dict[str, Any]) -> str:
    lat = rep.get("latency") or {}
    rounds = lat.get("rounds") or []
    parts = ["<h2>Latency on the board</h2>"]
    facts = [("unpruned (measured: " + (lat.get("unpruned_from") or "p50") + ")",
              _num(lat.get("unpruned_ms"), ".4g", " ms")),
             ("budget" + (f" ({lat['budget_from']})" if lat.get("budget_from") else ""),
              _num(lat.get("budget_ms"), ".4g", " ms")),
             ("final artifact (measured)", _num(lat.get("final_ms"), ".4g", " ms")),
             ("speedup", _num(lat.get("speedup"), ".3g", "x"))]
    parts.append(_table(["", "value"], facts, numeric=(1,)))
    if rounds:
        xs = [r.get("round", i + 1) for i, r in enumerate(rounds)]
        chart = line_chart(
            xs,
            {"measured": [r.get("measured_ms") for r in rounds],
             "predicted": [r.get("predicted_ms") for r in rounds]},
            title="p50 latency per closed-loop round", unit=" ms", xlabel="round",
            hlines={"budget": lat["budget_ms"]} if isinstance(lat.get("budget_ms"), (int, float)) else None,
        )
        parts.append(f'<div class="card">{chart}</div>')
        parts.append(_table(["round", "predicted ms", "measured ms", "budget ms", "within"],
                            [[r.get("round"), _num(r.get("predicted_ms"), ".4g"), _num(r.get("measured_ms"), ".4g"),
                              _num(r.get("budget_ms"), ".4g"), r.get("verdict") or _within(r)] for r in rounds],
                            numeric=(0, 1, 2, 3)))
    elif lat.get("note"):
        parts.append(f"<p>{_e(lat['note'])}</p>")
    return "".join(parts)


def _within(r: dict[str, Any]) -> str:
    m, b = r.get("measured_ms"), r.get("budget_ms")
    if not (isinstance(m, (int, float)) and isinstance(b, (int, float))):
        return "-"
    return "yes" if m <= b else "no (over)"


def _section_accuracy(rep: dict[str, Any]) -> str:
    rows = rep.get("accuracy") or []
    if not rows:
        return "<h2>Accuracy per stage</h2><p>No accuracy figures (no data was given).</p>"
    metric = rows[0].get("metric", "top-1")
    labels = [r.get("stage", "?") for r in rows]
    vals = [r.get("value") for r in rows]
    nums = [v for v in vals if isinstance(v, (int, float))]
    ymin = max(0.0, math.floor((min(nums) - 0.05) * 20) / 20) if nums else 0.0
    chart = bar_chart(labels, {metric: vals}, title=f"{metric} per stage: {rows[0].get('split', 'held-out')}",
                      ymin=ymin, width=max(480, 74 + 100 * len(labels)))
    table = _table(["stage", "metric", "value", "vs original", "data"],
                   [[r.get("stage"), r.get("metric"), _pct(r.get("value")),
                     _num(r.get("delta_points"), "+.2f", " pts") if r.get("delta_points") is not None else "-",
                     r.get("split", "")] for r in rows], numeric=(2, 3))
    return f'<h2>Accuracy per stage</h2><div class="grid"><div class="card">{chart}</div></div>{table}'


def _section_size(rep: dict[str, Any]) -> str:
    rows = rep.get("size") or []
    if not rows:
        return ""
    labels = [r.get("stage", "?") for r in rows]
    charts = []
    for key, title, scale, unit in (("bytes", "file size", 1e-6, " MB"), ("params", "parameters", 1e-6, " M"),
                                    ("macs", "MACs", 1e-6, " M")):
        vals = [r[key] * scale if isinstance(r.get(key), (int, float)) else None for r in rows]
        chart = bar_chart(labels, {title: vals}, title=f"{title} per stage", unit=unit, width=310)
        if chart:
            charts.append(f'<div class="card">{chart}</div>')
    table = _table(["stage", "file", "size", "params", "MACs"],
                   [[r.get("stage"), r.get("file", "-"), _num((r.get("bytes") or 0) / 1e6 if r.get("bytes") else None, ".3f", " MB"),
                     _num(r.get("params"), ","), _num(r.get("macs"), ",")] for r in rows], numeric=(2, 3, 4))
    return f'<h2>Size per stage</h2><div class="grid">{"".join(charts)}</div>{table}'


def _section_channels(rep: dict[str, Any]) -> str:
    rows = rep.get("channels") or []
    if not rows:
        return ""
    kept = sum(min(r.get("keep", 0), r.get("channels", 0)) for r in rows)
    total = sum(r.get("channels", 0) for r in rows)
    chart = channel_chart(rows, title="channels kept per layer group (blue) of the original (grey)")
    note = f"<p>{kept} of {total} prunable channels kept ({_pct(kept / total if total else None)}).</p>"
    protected = rep.get("protected") or []
    if protected:
        note += "<p>Kept whole: " + "; ".join(
            f"{_e(', '.join(p.get('layers', [])[:4]))} ({_e(p.get('reason'))})" for p in protected) + "</p>"
    return f'<h2>Channels kept per layer</h2>{note}<div class="card">{chart}</div>'


def _section_board(rep: dict[str, Any]) -> str:
    board = rep.get("board") or {}
    if not board:
        return ""
    keys = ("hostname", "model", "machine", "cpu_model", "cores", "cpu_quota", "governor", "freq_mhz",
            "memory_total_mb", "os", "python", "runtime", "runtime_version", "threads")
    rows = [[k, _num(board[k], ".6g") if isinstance(board[k], float) else board[k]]
            for k in keys if board.get(k) not in (None, "")]
    temps = board.get("temperatures_c") or {}
    if temps:
        rows.append(["temperatures", ", ".join(f"{k} {v:.0f} °C" for k, v in list(temps.items())[:6]
                                               if isinstance(v, (int, float)))])
    if board.get("throttled") is not None:
        rows.append(["throttled during measurement", board.get("throttled")])
    return "<h2>The board</h2>" + _table(["fact", "value (as the agent reported it)"], rows)


def _section_release(rep: dict[str, Any]) -> str:
    rel = rep.get("release") or {}
    if not rel:
        return ""
    ver = rel.get("verification") or {}
    rows = [[k, rel.get(k)] for k in ("id", "target", "path", "artifact", "sha256", "format", "precision",
                                      "previous", "kept_releases") if rel.get(k) not in (None, "")]
    if ver:
        rows.append(["on-board check", ", ".join(f"{k} {v}" for k, v in ver.items()
                                                 if isinstance(v, (int, float, str, bool)))])
    return "<h2>The release shipped</h2>" + _table(["field", "value"], rows)


def _section_stages(rep: dict[str, Any]) -> str:
    stages = rep.get("stages") or []
    if not stages:
        return ""
    rows = [[s.get("name"), s.get("state"), _num(s.get("seconds"), ".1f", " s"),
             s.get("board_measurements", "-"), s.get("note", "") or s.get("error", "")] for s in stages]
    return "<h2>Stages</h2>" + _table(["stage", "state", "wall time", "board measurements", "note"], rows,
                                      numeric=(2, 3))


def render_html(rep: dict[str, Any]) -> str:
    """The deploy report ``rep`` (the dict in deploy.json) as one self-contained HTML page."""
    title = f"edgeprune deploy: {rep.get('model', {}).get('name', 'model')} on {rep.get('target', '?')}"
    warnings = rep.get("warnings") or []
    warn_html = ""
    if warnings:
        warn_html = '<h2>Warnings</h2><ul class="warnings">' + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>"
    body = "".join([
        f"<h1>{_e(title)}</h1>",
        f'<div class="sub">{_e(rep.get("created", ""))} · edgeprune {_e(rep.get("edgeprune_version", ""))}'
        f' · <code>{_e(rep.get("command", ""))}</code></div>',
        _headline(rep),
        _section_stages(rep),
        _section_latency(rep),
        _section_accuracy(rep),
        _section_size(rep),
        _section_channels(rep),
        _section_board(rep),
        _section_release(rep),
        warn_html,
    ])
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>\n")


__all__ = ["bar_chart", "channel_chart", "line_chart", "render_html"]
