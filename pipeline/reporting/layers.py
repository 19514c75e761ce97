"""The "Worst layers" section of ``report.html`` and its line in the printed summary.

Both read check.json's ``sensitivity`` block (:mod:`pipeline.quant.sensitivity`): each layer quantized alone, weights
and input activations separately, ranked by the larger KL. The page shows the :data:`SHOWN` most sensitive layers
with what keeping each at 8 bits costs (its share of the network's MACs), and the action: the ``--layer-bits`` flags
that keep the most sensitive layers not yet at 8 bits there. Nothing here decides anything: the check stage chose
the suggestion; this module shows it. docs/sensitivity.md explains how to read the table.
"""

from __future__ import annotations

from html import escape

from pipeline.reporting import svg

SHOWN = 8  # rows of the table and bars of the chart: the most sensitive layers


def _block(report: dict) -> dict | None:
    block = (report.get("check") or {}).get("sensitivity")
    return block if isinstance(block, dict) else None


def _bits(row: dict) -> str:
    if row.get("float") or row.get("weight_bits") is None:
        return "float"
    a = row.get("act_bits")
    return f"w{row['weight_bits']}" + (f"a{a}" if a is not None else "")


def _settled(row: dict) -> str | None:
    """Why a suggestion cannot raise this layer (float, or already 8-bit weights and input), or None."""
    if row.get("float") or row.get("weight_bits") is None:
        return "float already"
    if row["weight_bits"] >= 8 and (row.get("act_bits") is None or row["act_bits"] >= 8):
        return "at 8 bits already"
    return None


def _ranked(block: dict) -> list[dict]:
    return sorted((r for r in block.get("layers") or [] if isinstance(r, dict)), key=lambda r: r.get("rank", 1 << 30))


def summary_lines(report: dict) -> list[str]:
    """One line for the printed run summary: the three worst layers and the flags that keep them at 8 bits."""
    block = _block(report)
    if block is None:
        return []
    if block.get("skipped"):
        return [f"worst layers: not measured ({block['skipped']})"]
    worst = _ranked(block)[:3]
    if not worst:
        return []
    cli = block.get("suggested_cli")
    return [f"worst layers ({block.get('scheme', '?')}, each quantized alone): "
            + ", ".join(f"{r['name']} (KL {r['score']:.3g}, {_bits(r)})" for r in worst)
            + (f"; to keep the most sensitive at 8 bits add: {cli}" if cli
               else "; every layer is already at 8 bits or float: nothing to suggest")]


def _effect(e: dict | None) -> tuple[str, str]:
    from pipeline.reporting.html import _f, _pct

    return ("–", "–") if not e else (_f(e.get("kl"), "{:.3g}"), _pct(e.get("top1_agreement")))


def _one(block: dict, label: str) -> str:
    from pipeline.reporting.html import _pct, _table

    if block.get("skipped"):
        return f'<p class="note">{escape(label)}Not measured: {escape(str(block["skipped"]))}.</p>'
    rows = _ranked(block)
    if not rows:
        return f'<p class="note">{escape(label)}No layer measured.</p>'
    shown = rows[:SHOWN]
    suggested = block.get("suggested_layer_bits") or {}
    total = block.get("total_macs") or sum(r.get("macs") or 0 for r in rows) or None

    def action(r: dict) -> str:
        if r["name"] in suggested:
            return f"<b>keep at {escape(str(suggested[r['name']]))}</b>"
        return f'<span class="note">{_settled(r)}</span>' if _settled(r) else "–"

    table_rows = []
    for r in shown:
        wk, wa = _effect(r.get("weights"))
        ak, aa = _effect(r.get("activations"))
        share = (r.get("macs") or 0) / total if total else None
        share_text = "<0.01%" if share is not None and 0 < share < 1e-4 else _pct(share)
        table_rows.append([str(r.get("rank", "–")), f"<code>{escape(r['name'])}</code>", escape(str(r.get("kind", "?"))),
                           escape(_bits(r)), wk, wa, ak, aa, share_text, action(r)])
    items = [(r["name"], float(r.get("score") or 0.0)) for r in shown]
    actionable = [r["name"] in suggested or not _settled(r) for r in shown]
    chart = svg.bar_chart(items, f"{label}The {len(shown)} most sensitive layers, each quantized alone", "KL(FP ‖ quantized), the larger "
                          "of weights and activations", [svg.OTHER_COLOR if a else svg.NOISY_COLOR for a in actionable],
                          value_fmt="{:.3g}", notes=["suggested" if r["name"] in suggested else None for r in shown])
    cli = block.get("suggested_cli")
    keep = list(suggested)
    cost = sum((r.get("macs") or 0) for r in rows if r["name"] in suggested) / total if total and keep else None
    if cli:
        advice = (f"<p>Action: keep the {len(keep)} most sensitive layer{'s' if len(keep) > 1 else ''} not yet at 8 bits "
                  f"({escape(', '.join(keep))}) at 8 bits, {_pct(cost)} of the network's MACs; add to the run's command:</p>"
                  f"<pre><code>{escape(cli)}</code></pre>")
    else:
        advice = '<p class="note">Nothing to suggest: the most sensitive layers are already at 8 bits or float.</p>'
    return (chart + _table(["rank", "layer", "kind", "bits now", "weights KL", "weights agree", "activations KL", "activations agree",
                            "MACs share", "action"], table_rows, 3, "layers")
            + advice
            + f'<p class="note">{escape(label)}Measured on the {escape(str(block.get("measured_on", "?")))}; ranges calibrated on the '
              f'{escape(str(block.get("calibrated_on", "?")))}; {len(rows)} layers, {escape(str(block.get("seconds", "?")))} s. '
              "Each row quantizes one layer alone, everything else float: its weights (weights KL) or the tensor its input reads "
              "(activations KL); KL = mean KL(FP ‖ quantized) of the softmax outputs, agree = top-1 agreement with FP. Grey bars: "
              "already at 8 bits or float. Isolated sensitivities do not add up and a KL is not an accuracy: the table ranks "
              "layers, it does not predict what a run reaches (docs/sensitivity.md).</p>")


def section(reports: list[dict], many: bool) -> str:
    """``<h2 id="layers">Worst layers</h2>`` and, per run, the chart, the table and the suggested flags."""
    from pipeline.reporting.html import _run_label

    parts = ['<h2 id="layers">Worst layers (per-layer sensitivity)</h2>']
    for rep in reports:
        block = _block(rep)
        label = _run_label(rep, many)
        if block is None:
            parts.append(f'<p class="note">{escape(label)}No per-layer sensitivity in check.json (re-run the check stage: '
                         "pipeline run --from check).</p>")
            continue
        parts.append(_one(block, label))
    return "".join(parts)
