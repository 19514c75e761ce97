"""The "Slowest ops" section: per artifact, the ops its runtime's own profiler says take the time, host and devices.

The figures are the runtime's (``runtimes/profiling.py``: onnxruntime session profiling, OpenVINO performance
counters, LiteRT's profiler), measured by the check stage on this host and by the bench agent on each device,
stored as ``op_profile`` in check.json's artifacts and in each device result. Nothing is computed here but the
cumulative share; the page says what each profile is (runtime, threads, runs, the profiler) and why the shares
matter more than the milliseconds (profiling costs time, and the total is the ops' sum, not the latency).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from pipeline.reporting.status import device_label

TOP = 10  # ops shown per profile (the rest are summed in one line)


def profiles(report: dict) -> list[tuple[str, str, dict | None, dict]]:
    """Every op profile of a report: (artifact, where, profile or None, the record it came from), host check first."""
    out: list[tuple[str, str, dict | None, dict]] = []
    for name, entry in ((report.get("check") or {}).get("artifacts") or {}).items():
        if "op_profile" in entry:
            out.append((name, "host check", entry["op_profile"], entry))
    for dev in report.get("devices") or []:
        out.append((dev["artifact"]["name"], device_label(dev), dev.get("op_profile"), dev))
    return out


def _heading(where: str, prof: dict, record: dict) -> str:
    threads = prof.get("threads")
    bits = [f"<b>{escape(where)}</b>", escape(str(prof.get("runtime") or "?"))]
    bits += [f"{threads} thread{'s' if threads != 1 else ''}"] if threads else []
    bits += [f"{prof.get('runs', 0)} profiled runs after {prof.get('warmup_runs', 0)} warm-up",
             f"{prof.get('total_ms', 0.0):.3f} ms in ops per inference"]
    emulated = record.get("latency_source") == "emulated"
    return ("<p>" + " · ".join(bits) + (' <span class="flag">(emulated CPU: the emulator\'s times)</span>' if emulated else "")
            + f'<br><span class="note">{escape(str(prof.get("source", "")))}</span></p>')


def _by_type(prof: dict) -> str:
    rows = prof.get("by_type") or []
    if not rows:
        return ""
    items = " · ".join(f"{escape(r['type'])} {r['share']:.1%} ({r.get('count', '?')})" for r in rows[:8])
    more = f" · {len(rows) - 8} more types" if len(rows) > 8 else ""
    return f'<p class="note">By op type (share of op time, op count): {items}{more}</p>'


def _table(prof: dict) -> str:
    from pipeline.reporting.html import _f, _table as table

    ops = prof.get("ops") or []
    rows, cumulative = [], 0.0
    for i, op in enumerate(ops[:TOP], 1):
        cumulative += op.get("share", 0.0)
        calls = f' <span class="note">×{op["calls"]}</span>' if op.get("calls") else ""
        rows.append([str(i), f"<code>{escape(str(op['name']))}</code>", escape(str(op["type"])) + calls,
                     escape(str(op.get("kernel") or "–")), escape(str(op.get("precision") or "–")), _f(op["ms"]),
                     f"{op['share']:.1%}", f"{cumulative:.1%}"])
    rest = ops[TOP:]
    if rest:
        rows.append(["", f'<span class="note">{len(rest)} more ops</span>', "", "", "", _f(sum(o["ms"] for o in rest)),
                     f"{sum(o['share'] for o in rest):.1%}", "100.0%"])
    return table(["#", "op (node)", "type", "kernel", "precision", "ms / inference", "share", "cumulative"], rows, 5, "ops")


def section(reports: list[dict], many: bool) -> str:
    """The page section: a block per artifact, one profile after the other (host check, then each device)."""
    from pipeline.reporting.html import _pair_key

    head = "<h2 id=\"ops\">Slowest ops</h2>"
    parts = []
    for rep in reports:
        by_artifact: dict[str, list] = {}
        for name, where, prof, record in profiles(rep):
            by_artifact.setdefault(name, []).append((where, prof, record))
        for name in sorted(by_artifact, key=lambda n: _pair_key(n, "fp32" if ".fp32." in n else "int")):  # FP32 twin first
            label = (Path(rep.get("run_dir", "?")).name + ": " if many else "") + name
            parts.append(f"<h3>{escape(label)}</h3>")
            for where, prof, record in by_artifact[name]:
                if prof is None:
                    parts.append(f'<p class="note"><b>{escape(where)}</b>: no op profile in this result (measured before op '
                                 "profiling existed, or with --enable_op_profiling false)</p>")
                elif not prof.get("ops"):
                    parts.append(f'<p class="note"><b>{escape(where)}</b>: no op profile: '
                                 f"{escape(str(prof.get('unavailable') or 'the profiler listed no op'))}</p>")
                else:
                    parts.append(_heading(where, prof, record) + _by_type(prof) + _table(prof))
    if not parts:
        return head + ('<p class="note">No op profile: the check stage profiles every artifact when it benchmarks (check.bench), '
                       "pipeline bench on each device (--enable_op_profiling, on by default).</p>")
    return (head + '<p class="note">Per-op time from each runtime\'s <b>own profiler</b> (onnxruntime session profiling, OpenVINO '
                   "performance counters, LiteRT's profiler as benchmark_model --enable_op_profiling prints it), in a separate "
                   "profiled session after the timed runs: ms = mean per inference over the profiled runs; share = of the ops' "
                   "total, which is not the latency (the runtime's own overhead is outside it, and with several threads op "
                   "times can overlap). Profiling itself costs time: <b>read the shares, not the milliseconds</b>, and compare "
                   "places by share. docs/profiling.md says what each runtime measures.</p>" + "".join(parts))


def summary_lines(report: dict, top: int = 2) -> list[str]:
    """The end-of-run summary's lines: per artifact and place, the op types' shares and the slowest ops."""
    from runtimes.profiling import profile_line

    return [f"slowest ops {name} ({where}): {profile_line(prof, top)}" for name, where, prof, _ in profiles(report) if prof is not None]
