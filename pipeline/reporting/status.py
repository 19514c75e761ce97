"""What a report may claim: each row's status, whether a latency is steady enough to read, and the speed-ups.

One home for the rules every view of a run uses (``report.json``, the page, the printed summary, the flat
``--format`` rows), so that no view shows a colour or a speed-up another one would not:

- an artifact's status is what the check stage's gates decided (check.json ``artifacts[name].status``:
  ``pass`` / ``fail`` / ``not gated``), never a constant; a device result's is ``ok`` / ``mismatch`` /
  ``unchecked`` (no reference data travelled, nothing was compared);
- only ``pass`` and ``ok`` are good; ``fail`` and ``mismatch`` are bad; ``not gated`` and ``unchecked`` are neutral;
- a host latency is *noisy* when the check stage says so (trials that disagree, samples that scatter:
  :func:`pipeline.stages.check.noise`); a device latency when its trials' p50s differ by more than the protocol's
  limit (``steady.unstable``); either when it comes from a single trial (nothing to judge it by). A speed-up
  computed from a noisy figure carries ``noisy: true`` and the reason.
"""

from __future__ import annotations

from pathlib import Path

GOOD, BAD, NEUTRAL = "ok", "bad", "neutral"  # the page's CSS classes
_KIND = {"pass": GOOD, "ok": GOOD, "fail": BAD, "mismatch": BAD, "not gated": NEUTRAL, "unchecked": NEUTRAL}


def kind(status: str | None) -> str:
    """``ok``, ``bad`` or ``neutral`` for a status word; anything unknown is neutral, never good."""
    return _KIND.get(status or "", NEUTRAL)


def artifact_status(entry: dict | None) -> str:
    """The check stage's verdict on one artifact (``pass``, ``fail`` or ``not gated``); a check.json written before
    the gates existed gated nothing, so its artifacts are ``not gated``."""
    status = (entry or {}).get("status")
    return status if status in ("pass", "fail", "not gated") else "not gated"


def device_status(dev: dict) -> str:
    """``ok``, ``mismatch`` or ``unchecked``: a result whose outputs were compared with nothing is ``unchecked``,
    whatever an older agent wrote in its ``status``."""
    status = dev.get("status")
    if status == "mismatch":
        return "mismatch"
    return "ok" if status == "ok" and dev.get("reference") else "unchecked"


def device_label(dev: dict) -> str:
    """A device result's name, marked when its latencies were measured on an emulated CPU (never a device figure)."""
    return dev["device"]["name"] + (" (emulated CPU)" if dev.get("latency_source") == "emulated" else "")


def _spread_reason(spread: float, limit: float | None) -> str:
    return f"p50 differs by {spread:.1%} between trials (> {limit if limit is not None else 0.05:.0%})"


def host_noise(lat: dict | None) -> tuple[bool, str | None]:
    """(noisy, why) of a host-check latency (check.json ``artifacts[name].latency``).

    The check stage's own ``noisy`` / ``noise_reason`` (:func:`pipeline.stages.check.noise`) are the verdict. A
    check.json from before them timed one trial: it is judged by the same rule, and one trial is itself a reason
    (its spread is unknown).
    """
    if not lat:
        return False, None
    if "noisy" in lat:
        return bool(lat["noisy"]), lat.get("noise_reason")
    from pipeline.stages.check import noise

    why = []
    if lat.get("p50_ms") is not None and lat.get("max_ms") is not None:
        why += [w for w in [noise({**lat, "cv": _cv(lat)})] if w]
    if int(lat.get("trials") or 1) < 2:
        why.append("one trial: no spread between trials to judge it by")
    return bool(why), "; ".join(why) or None


def device_noise(run: dict) -> tuple[bool, str | None]:
    """(noisy, why) of one thread count of a device result: its trials' p50s disagree beyond the limit, or one trial."""
    s = run.get("steady") or {}
    why = []
    if s.get("unstable"):
        why.append(_spread_reason(s.get("spread", 0.0), s.get("spread_limit")))
    if s.get("trials") is not None and int(s["trials"]) < 2:
        why.append("one trial: no spread between trials to judge it by")
    return bool(why), "; ".join(why) or None


def _cv(lat: dict) -> float | None:
    if lat.get("cv") is not None:
        return float(lat["cv"])
    if lat.get("std_ms") is not None and lat.get("mean_ms"):
        return float(lat["std_ms"]) / float(lat["mean_ms"])
    return None


def spread_text(spread: float | None, cv: float | None = None, trials: int | None = None) -> str:
    """``±4.1% over 3 trials, CV 0.12``: the spread as the page and the summary print it beside a latency."""
    parts = []
    if spread is not None and (trials or 0) >= 2:
        parts.append(f"spread {spread:.1%} over {trials} trials")
    elif trials is not None:
        parts.append(f"{trials} trial{'s' if trials != 1 else ''}")
    if cv is not None:
        parts.append(f"CV {cv:.2f}")
    return ", ".join(parts) or "–"


def host_spread(lat: dict) -> str:
    return spread_text(lat.get("spread"), _cv(lat), int(lat.get("trials") or 1))


def device_spread(run: dict) -> str:
    s = run.get("steady") or {}
    cv = s["std_ms"] / s["mean_ms"] if s.get("std_ms") is not None and s.get("mean_ms") else None
    return spread_text(s.get("spread"), cv, s.get("trials"))


def _precision(artifact_name: str, precisions: dict[str, str]) -> str:
    """``fp32`` or ``int`` for a benched artifact, as the run's export index records it (not guessed from the name)."""
    recorded = precisions.get(artifact_name)
    if recorded is None:  # benched from elsewhere (pipeline bench --artifact): nothing says what it is
        return "unknown"
    return "fp32" if recorded == "fp32" else "int"


def speedups(report: dict) -> list[dict]:
    """int-vs-FP32 speed-up (p50 ratio) per device, runtime and thread count, and per runtime in the host check.

    Each carries the two figures' noise: ``noisy`` is true when either figure is noisy (:func:`host_noise`,
    :func:`device_noise`), and ``why`` says which and why; such a ratio is no speed-up to quote.
    """
    by_key: dict[tuple, dict[str, tuple[float, bool, str | None]]] = {}
    precisions = {Path(a["path"]).name: a["precision"] for a in report.get("artifacts") or []}
    for dev in report.get("devices") or []:
        prec = _precision(dev["artifact"]["name"], precisions)
        for run in dev.get("runs", []):
            p50 = run["steady"].get("p50_ms") or run["steady"].get("mean_ms")
            if p50:
                by_key.setdefault((device_label(dev), dev["artifact"]["runtime"], run["threads"]), {})[prec] = (p50, *device_noise(run))
    for _, e in ((report.get("check") or {}).get("artifacts") or {}).items():
        lat = e.get("latency") or {}
        if lat.get("p50_ms"):
            prec = "fp32" if e["precision"] == "fp32" else "int"
            by_key.setdefault(("host check", e["runtime"], lat.get("threads", 1)), {})[prec] = (lat["p50_ms"], *host_noise(lat))
    out = []
    for (device, runtime, threads), v in sorted(by_key.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if "fp32" in v and "int" in v:
            (fp, fp_noisy, fp_why), (it, it_noisy, it_why) = v["fp32"], v["int"]
            why = "; ".join(f"{side}: {w}" for side, noisy, w in (("FP32", fp_noisy, fp_why), ("integer", it_noisy, it_why)) if noisy)
            out.append({"device": device, "runtime": runtime, "threads": threads, "fp32_p50_ms": fp, "int_p50_ms": it,
                        "speedup": fp / it, "noisy": fp_noisy or it_noisy, "why": why or None})
    return out
