"""Render a :class:`Report` as text, Markdown, self-contained HTML (inline SVG) or JSON.

All four read the same model. Figures that are not measured say so: every R&D row names how it
was obtained, and anything not fully measured is called an estimate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.report import _svg
from hpsearch_budget.report._model import (
    CarbonAfterBestInfo,
    ForecastCost,
    ForecastRange,
    ForecastSection,
    ImportanceSection,
    PhaseRow,
    Report,
    VarianceSection,
)

FORMATS = ("text", "md", "html", "json")
Table = tuple[str, list[str], list[list[str]]]


def _n(x: float | None, digits: int = 3) -> str:
    """``digits`` significant digits; "n/a" for unknown."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    if 10**digits <= abs(x) < 1e12:
        return f"{x:,.0f}"
    if abs(x) >= 10**digits or abs(x) < 1:
        return f"{x:.{digits}g}"
    return f"{x:,.{max(0, digits - 1 - int(math.log10(abs(x))))}f}"


def _usd(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"${_n(x)}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _trials(n: int, what: str = "trials") -> str:
    """``"1 trial"``, ``"3 complete trials"``."""
    return f"{n} {what[:-1] if n == 1 else what}"


def _basis(p: PhaseRow, chosen: int | None) -> str:
    """How a row's energy was obtained; anything not fully measured is called an estimate.
    ``chosen``: the trial final training and seed reruns are projected from (None: none)."""
    if p.basis == "none" and p.phase in ("final", "seed") and chosen is None:
        return "not projected: no complete trial"
    if p.runs == 0 and p.phase != "idle":  # idle is no run, but it was recorded
        return "none run"
    if p.basis == "none":
        return "no energy data"
    shares = (
        ("measured", p.measured_share),
        ("estimated", p.estimated_share),
        ("projected", p.projected_share),
    )
    parts = [
        f"{share:.0%} {name}" if share >= 0.005 else f"<1% {name}"
        for name, share in shares
        if share
    ]
    if (p.measured_share or 0) >= 0.999:
        return "measured"
    if not parts:
        return "no energy"
    return ("partly estimate (" if p.measured_share else "estimate (") + ", ".join(parts) + ")"


def _runs_cell(p: PhaseRow) -> str:
    """Trials or runs of a row; "-" for idle, which is none."""
    if p.phase == "idle":
        return "-"
    return f"{p.runs:g}" if float(p.runs).is_integer() else _n(p.runs)


def _cloud(p: PhaseRow) -> str:
    if p.cloud_usd_low is None or p.cloud_usd_high is None:
        return "n/a"
    return f"{_usd(p.cloud_usd_low)}–{_usd(p.cloud_usd_high)}"


def _study_table(r: Report) -> Table:
    s = r.study
    states = ", ".join(f"{k} {v}" for k, v in sorted(s.states.items()))
    best = "n/a" if s.best_trial is None else f"#{s.best_trial}: {_n(s.best_value, 6)}"
    return (
        "Study",
        ["", ""],
        [
            ["study", s.name],
            ["source", f"{s.source_kind}: {s.source}"],
            ["direction", s.direction],
            ["trials", f"{s.n_trials} ({states})"],
            ["best trial", best],
            ["best params", ", ".join(f"{k}={v}" for k, v in s.best_params.items()) or "n/a"],
            ["hardware", ", ".join(s.hardware) or "not recorded"],
            ["energy sources", ", ".join(f"{k} {v}" for k, v in s.energy_sources.items())],
            ["elapsed", "n/a" if s.elapsed_s is None else f"{_n(s.elapsed_s / 3600)} h"],
        ],
    )


def _rnd_tables(r: Report) -> list[Table]:
    out = [_rnd_cost_table(r), _assumptions_table(r)]
    if r.rnd.what_ifs:
        out.append(_what_if_table(r))
    return out


#: R&D rows whose phase name alone would not say what they are.
_PHASE_LABELS = {"idle": "idle between trials"}


def _rnd_cost_table(r: Report) -> Table:
    """The paper's Tables 3/4: one row per phase and the total, each saying how obtained."""
    rows = [
        [
            _PHASE_LABELS.get(p.phase, p.phase),
            _runs_cell(p),
            _n(p.hours),
            _n(p.gpu_hours),
            _n(p.energy_kwh_pue),
            _n(p.co2e_kg),
            _n(p.co2e_lbs),
            _cloud(p),
            _usd(p.electricity_usd),
            _basis(p, r.rnd.chosen_trial),
        ]
        for p in [*r.rnd.phases, r.rnd.total]
    ]
    header = [
        "phase",
        "trials (equiv.)",
        "hours",
        "GPU-h",
        "kWh×PUE",
        "kg CO2e",
        "lbs CO2e",
        "cloud USD",
        "electricity USD",
        "how obtained",
    ]
    return ("R&D cost (Strubell et al. 2019, Tables 3/4)", header, rows)


def _assumptions_table(r: Report) -> Table:
    """What the projections assumed, each with where it came from."""
    a = r.rnd.assumptions
    chosen = "n/a" if r.rnd.chosen_trial is None else f"#{r.rnd.chosen_trial}"
    return (
        "Assumptions (used for projections and where the data is silent)",
        ["", ""],
        [
            ["final training", f"{_n(a.final_epochs)} × the chosen trial ({chosen})"],
            ["seed reruns", str(a.seeds)],
            ["PUE", f"{_n(a.pue)} ({a.pue_source})" if a.pue_source else _n(a.pue)],
            ["grid intensity", f"{_n(a.g_per_kwh)} g/kWh ({a.intensity_source})"],
            ["electricity", f"{_n(a.usd_per_kwh)} USD/kWh ({a.usd_per_kwh_source})"],
            [
                "cloud price",
                a.gpu_price or "none given (pass --gpu NAME for a cloud cost range)",
            ],
            *_idle_assumption(r),
        ],
    )


def _idle_assumption(r: Report) -> list[list[str]]:
    """How the idle between trials is projected, when the ledger recorded some."""
    if not any(p.phase == "idle" for p in r.rnd.phases):
        return []
    return [["idle between trials", "as recorded; per trial, so 'more tuning trials' adds it"]]


def _what_if_table(r: Report) -> Table:
    """The R&D cost under the what-if scenarios (another grid, PUE or more trials)."""
    return (
        "What if (estimates)",
        ["scenario", "kWh×PUE", "kg CO2e", "lbs CO2e", "electricity USD"],
        [
            [
                w.label,
                _n(w.energy_kwh_pue),
                _n(w.co2e_kg),
                _n(w.co2e_lbs),
                _usd(w.electricity_usd),
            ]
            for w in r.rnd.what_ifs
        ],
    )


def _range_cell(rng: ForecastRange, unit: str) -> str:
    """``estimate (low–high)`` of one unit; "n/a" where the sweep recorded no such figure,
    "no interval" where the trials are too few to give one."""
    est, lo, hi = (getattr(c, unit) for c in (rng.estimate, rng.low, rng.high))
    if est is None:
        return "n/a"
    if lo is None or hi is None:
        return f"{_n(est)} (no interval)"
    return f"{_n(est)} ({_n(lo)}–{_n(hi)})"


def _spent_cell(c: ForecastCost, unit: str) -> str:
    return _n(getattr(c, unit))


def _forecast_tables(r: Report) -> list[Table]:
    f = r.forecast
    if f is None:
        return []
    units = ("energy_kwh", "co2e_kg", "usd", "gpu_hours")
    planned = (
        f"{f.n_trials_planned} trials ({f.n_trials_planned_source})"
        if f.n_trials_planned is not None
        else "unknown (pass --n-trials N)"
    )
    rows = [["spent so far (recorded)", str(f.n_finished + f.n_running)]]
    rows[0] += [_spent_cell(f.spent, u) for u in units]
    unknown = ["unknown"] * len(units)
    ranges: list[tuple[str, ForecastRange | None, list[str]]] = [
        ("to finish the sweep", f.to_finish, unknown),
        ("whole sweep", f.sweep_total, unknown),
        # Not the R&D table's "final" (the chosen trial): the sweep may not have chosen yet.
        ("final training (median trial)", f.final, ["not forecast"] * len(units)),
        ("seed reruns", f.seeds, ["none asked (--seeds)"] * len(units)),
    ]
    for label, rng, missing in ranges:
        if rng is None:
            rows.append([label, "n/a", *missing])
        else:
            rows.append([label, _equiv(rng, f), *[_range_cell(rng, u) for u in units]])
    title = f"Forecast (estimates; {f.level:.0%} interval in brackets; planned: {planned})"
    header = ["", "trials (equiv.)", "kWh (device)", "kg CO2e", "USD", "GPU-h"]
    return [(title, header, rows)]


def _equiv(rng: ForecastRange, f: ForecastSection) -> str:
    """A forecast row's size in trials, as the R&D table counts them: each seed rerun is one
    final training, itself ``final.runs`` trials."""
    if rng is f.seeds and f.final is not None:
        return f"{rng.runs * f.final.runs:g}"
    return f"{rng.runs:g}"


def _variance_tables(r: Report) -> list[Table]:
    v = r.variance
    out: list[Table] = [("Variance", ["", ""], _variance_rows(v))]
    if v.evp_with_replacement:
        out.append(_evp_table(v))
    return out


def _variance_rows(v: VarianceSection) -> list[list[str]]:
    """Seed variance, the top-k spread and the carbon spent after the best, a row each."""
    rows = []
    if v.seed:
        rows.append(
            [
                "seed variance",
                f"{v.seed.n} runs ({v.seed_origin}): mean {_n(v.seed.mean, 5)}, std "
                f"{_n(v.seed.std)}, range {_n(v.seed.min, 5)} to {_n(v.seed.max, 5)}",
            ]
        )
    else:
        rows.append(["seed variance", v.seed_note])
    if v.top_k_spread:
        t = v.top_k_spread
        rows.append(
            [
                f"top-{v.top_k} spread",
                f"{_trials(t.n)}: mean {_n(t.mean, 5)}, std {_n(t.std)}, range "
                f"{_n(t.min, 5)} to {_n(t.max, 5)}",
            ]
        )
    if v.carbon_after_best:
        rows.append(["carbon after the best", _after_best(v.carbon_after_best)])
    return rows


def _after_best(c: CarbonAfterBestInfo) -> str:
    """What the sweep spent after its best-so-far came within tolerance of the final best."""
    reached = f"trial #{c.reached_at_trial} came within {c.tolerance:.1%} of the final best"
    if c.share is None:
        return f"unknown: no energy recorded ({reached})"
    if c.co2e_kg_total > 0:
        spent = (
            f"{_pct(c.share)} of the sweep's carbon ({_n(c.co2e_kg_after)} of "
            f"{_n(c.co2e_kg_total)} kg CO2e, estimate)"
        )
    else:
        spent = f"{_pct(c.share)} of the sweep's energy (no carbon recorded)"
    return f"{spent} was spent after {reached}"


def _evp_table(v: VarianceSection) -> Table:
    """Expected best vs number of trials, with and without replacement, at up to 8 budgets."""
    by_n = {p.n: p for p in v.evp_without_replacement}
    return (
        "Expected best validation performance (Dodge et al. 2019)",
        [
            "trials",
            "kg CO2e (est.)",
            "E[best] with replacement",
            "± std",
            "E[best] without replacement",
        ],
        [
            [
                str(p.n),
                _n(p.co2e_kg),
                _n(p.expected, 5),
                _n(p.std),
                _n(by_n[p.n].expected, 5) if p.n in by_n else "n/a",
            ]
            for p in _some(v.evp_with_replacement, 8)
        ],
    )


def tables(r: Report) -> list[Table]:
    """The report's tables as (title, header, rows); shared by every renderer."""
    out = [_study_table(r), *_rnd_tables(r), *_forecast_tables(r)]
    for imp in r.sensitivity:
        n = _trials(imp.n_trials, "complete trials")
        title = _importance_title(r, imp, f"{imp.evaluator}, {n}")
        rows = [[k, f"{v:.3f}"] for k, v in imp.importances.items()] or [["(none)", imp.note]]
        if imp.importances and imp.note:  # e.g. all zero: say why beside them
            rows.append(["(note)", imp.note])
        out.append((title, ["parameter", "importance"], rows))
    out += _variance_tables(r)
    out.append(_checklist_table(r))
    return out


def _checklist_table(r: Report) -> Table:
    """The paper's recommendations, then the lab policy's requirements (when one was checked
    and sets any: no policy, no rows)."""
    rows = [[c.label, c.status, c.detail] for c in r.checklist]
    title = "Checklist (Strubell et al. 2019 recommendations)"
    if r.policy and r.policy.requirements:
        rows += [[q.label, q.status, q.detail] for q in r.policy.requirements]
        title = "Checklist (Strubell et al. 2019 recommendations and the lab policy)"
    return (title, ["item", "status", "detail"], rows)


def _some(points: Sequence[Any], k: int) -> list[Any]:
    if len(points) <= k:
        return list(points)
    idx = sorted({round(i * (len(points) - 1) / (k - 1)) for i in range(k)})
    return [points[i] for i in idx]


def _footer(r: Report) -> str:
    return (
        f"Generated {r.generated_at:%Y-%m-%d %H:%M} UTC by hpsearch_budget {r.tool_version} "
        f"(report schema {r.schema_version}). Figures not marked as measured are estimates."
    )


def render_text(r: Report) -> str:
    out = [f"hpaudit report: {r.study.name}", ""]
    for title, header, rows in tables(r):
        out += [title, "-" * len(title)]
        body = [header, *rows] if any(header) else rows
        widths = [max(len(row[i]) for row in body) for i in range(len(body[0]))]
        out += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in body
        ]
        out.append("")
    if r.notes:
        out += ["Notes", "-----", *[f"- {n}" for n in r.notes], ""]
    out.append(_footer(r))
    return "\n".join(out) + "\n"


def _md(s: str) -> str:
    # A user string must neither open an HTML tag nor break the table. Only < and > are
    # escaped: "&amp;" would show as such in the raw file ("R&amp;D"), and a lone & is no tag.
    return s.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("\n", " ")


def render_markdown(r: Report) -> str:
    out = [f"# hpaudit report: {_md(r.study.name)}", ""]
    for title, header, rows in tables(r):
        head = header if any(header) else ["", ""]
        out += [
            f"## {_md(title)}",
            "",
            "| " + " | ".join(_md(h) for h in head) + " |",
            "|" + "---|" * len(head),
        ]
        out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
        out.append("")
    if r.notes:
        out += ["## Notes", "", *[f"- {_md(n)}" for n in r.notes], ""]
    out.append(_md(_footer(r)))
    return "\n".join(out) + "\n"


def render_json(r: Report) -> str:
    return r.model_dump_json(indent=2) + "\n"


# -- HTML ----------------------------------------------------------------------------------

_CSS = (
    "body{font-family:sans-serif;margin:2em auto;max-width:1100px;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}"
    "th{background:#f4f4f4}.figs{display:flex;flex-wrap:wrap;gap:12px}"
    "svg.figure{border:1px solid #eee;background:#fff}"
    ".ok td:nth-child(2){color:#176b1f}.partial td:nth-child(2){color:#a26100}"
    ".missing td:nth-child(2){color:#b00020}"
)


def _sample(n: int, k: int = 2000) -> list[int]:
    """At most ``k`` indices, reproducibly: a 10,000-trial scatter stays a small file."""
    if n <= k:
        return list(range(n))
    return sorted(random.Random(0).sample(range(n), k))


def _history(r: Report) -> str:
    pts = r.trials
    has_co2 = bool(pts) and pts[-1].cum_co2e_kg > 0
    xs = [p.cum_co2e_kg if has_co2 else float(p.number) for p in pts]
    vals = [p.value for p in pts if p.value is not None]
    chart = _svg.Chart(
        "Optimisation history" + (" vs carbon spent (estimate)" if has_co2 else ""),
        "cumulative kg CO2e" if has_co2 else "trial number",
        "objective",
        (min(xs, default=0.0), max(xs, default=1.0)),
        (min(vals), max(vals)) if vals else (0.0, 1.0),
    )
    idx = _sample(len(pts))
    chart.points([xs[i] for i in idx], [_nan(pts[i].value) for i in idx], _svg.COLORS[0], "trials")
    chart.line(xs, [_nan(p.best_so_far) for p in pts], _svg.COLORS[1], "best so far", step=True)
    return chart.svg("fig-history")


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def _evp(r: Report) -> str | None:
    ev, ew = r.variance.evp_with_replacement, r.variance.evp_without_replacement
    if not ev:
        return None
    per = r.variance.co2e_kg_per_trial
    chart = _svg.Chart(
        "Expected best vs budget (Dodge et al. 2019)",
        "trials (log scale)" + (f"; each about {per:.3g} kg CO2e (estimate)" if per else ""),
        "expected best",
        (1, max(2, ev[-1].n)),
        (min(p.low for p in ev + ew), max(p.high for p in ev + ew)),
        xlog=True,
    )
    chart.band([p.n for p in ev], [p.low for p in ev], [p.high for p in ev], _svg.COLORS[0])
    chart.line(
        [p.n for p in ev], [p.expected for p in ev], _svg.COLORS[0], "with replacement ± std"
    )
    chart.line(
        [p.n for p in ew],
        [p.expected for p in ew],
        _svg.COLORS[2],
        "without replacement",
        dash="5,3",
    )
    return chart.svg("fig-evp")


def _energy_label(r: Report) -> str:
    """ " (estimate)" unless every trial's energy was measured: a chart is a figure too."""
    sources = {s for s, n in r.study.energy_sources.items() if n and s != "none"}
    if sources <= {"measured"}:
        return ""
    return " (partly estimated)" if "measured" in sources else " (estimate)"


def _importance_title(r: Report, imp: ImportanceSection, how: str) -> str:
    """An importance for energy ranks parameters by the trials' energy: an estimate where
    that energy is."""
    label = _energy_label(r) if imp.target == "energy" else ""
    return f"Importance for {imp.target}{label} ({how})"


def _energy_by_fate(r: Report) -> str | None:
    energy = [(p.state, p.energy_kwh) for p in r.trials if p.energy_kwh is not None]
    if not energy:
        return None
    states = sorted({s for s, _ in energy})
    chart = _svg.Chart(
        "Energy per trial by fate" + _energy_label(r),
        "trial fate",
        "kWh / trial",
        (-0.5, len(states) - 0.5),
        (0.0, max(e for _, e in energy)),
        categories=states,
    )
    rng = random.Random(0)
    for k, state in enumerate(states):
        es = [e for s, e in energy if s == state]
        shown = [es[j] for j in _sample(len(es), 800)]
        chart.points(
            [k + rng.uniform(-0.3, 0.3) for _ in shown],
            shown,
            _svg.COLORS[k % 6],
            f"{state} ({len(es)})",
        )
    return chart.svg("fig-energy-by-fate")


def figures(r: Report) -> list[str]:
    """The figures as inline SVG: history vs carbon, expected best, importances, energy."""
    figs = [_history(r), _evp(r)]
    for i, imp in enumerate(r.sensitivity):
        if imp.importances:
            figs.append(
                _svg.bars(
                    _importance_title(r, imp, imp.evaluator),
                    list(imp.importances),
                    list(imp.importances.values()),
                    f"fig-importance-{imp.target}",
                    _svg.COLORS[3 + i],
                )
            )
    figs.append(_energy_by_fate(r))
    return [f for f in figs if f]


def render_html(r: Report) -> str:
    body = [
        f"<h1>hpaudit report: {escape(r.study.name)}</h1>",
        '<div class="figs">' + "".join(figures(r)) + "</div>",
    ]
    for title, header, rows in tables(r):
        body.append(f"<h2>{escape(title)}</h2><table>")
        if any(header):
            body.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>")
        checklist = title.startswith("Checklist")
        for row in rows:
            cls = f' class="{escape(row[1])}"' if checklist else ""
            body.append(f"<tr{cls}>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
        body.append("</table>")
    if r.notes:
        body.append(
            "<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in r.notes) + "</ul>"
        )
    body.append(f"<p><small>{escape(_footer(r))}</small></p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>hpaudit report: {escape(r.study.name)}</title>"
        # Nothing may load from elsewhere: the file must work offline and leak nothing.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<style>{_CSS}</style></head><body>" + "".join(body) + "</body></html>\n"
    )


RENDERERS: dict[str, Callable[[Report], str]] = {
    "text": render_text,
    "md": render_markdown,
    "html": render_html,
    "json": render_json,
}


def render(r: Report, fmt: str) -> str:
    """The report in ``fmt``, one of :data:`FORMATS`."""
    try:
        renderer = RENDERERS[fmt]
    except KeyError:
        raise HpauditInputError(
            f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}"
        ) from None
    return renderer(r)
