"""Stage 4: does each artifact compute the model? Fidelity on held-out synthetic data, real accuracy, latency, size.

Label-free evidence first (the user has no data): top-1 agreement of every
artifact with the FP model and with the fake-quant model, KL divergence and
output differences (in output-LSB units at an integer edge) on the held-out
synthetic set, which QAT never saw, overall and per class (the FP model's top-1).
With ``--eval-data``, real accuracy of the FP model, the fake-quant model and every
artifact, and each artifact's agreement with FP on those images.

Host latency is ``check.trials`` timed trials (one warm-up), summarised by
:func:`runtimes.benchmark.summarize_trials`; a figure whose trials disagree or whose
samples scatter is marked ``noisy`` (:func:`noise`): it must not be read as a speed-up.

Then the quality gates (:mod:`pipeline.gates`) judge the measurements: ``check.json`` gets
the ``gates`` block and each artifact a ``status``. The thresholds are not measurements:
when only they changed since the last check, the stage judges the same measurements again
instead of redoing them (:func:`measurement_key`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

import runtimes
from devices.reference import metrics
from runtimes.profiling import op_profile, profile_line
from pipeline import gates
from pipeline.evaldata import digest
from pipeline.quant.qat import predict
from pipeline.runner import RunContext, write_json
from pipeline.stages.export import load_artifacts
from pipeline.stages.qat import load_student
from pipeline.synthesis import SyntheticSet

BUNDLE_MAX_BYTES = 16 << 20  # reference inputs that travel to a device: at most this much (and 128 images)
AGREEMENT_MARGIN = 0.02  # a device may flip this share of top-1 decisions more than the host did
# Host latency is noisy (not to be read as a speed-up) when, besides trials whose p50s differ by more than
# runtimes.benchmark.SPREAD_LIMIT, the samples scatter: CV (std / mean) above NOISE_CV, or a max above NOISE_TAIL × p50
# (seen on a shared 2-core host: CV 0.67, max 13.9 ms at p50 0.80 ms).
NOISE_CV = 0.25
NOISE_TAIL = 10.0


def layer_sqnr(teacher: torch.nn.Module, student: torch.nn.Module, x: torch.Tensor, fold_bn: bool) -> list[dict]:
    """SQNR (dB) of every quantized conv/linear output against the same layer of the FP model, in network order.

    The FP side is the teacher traced the way the student was built (BN folded for
    ``deploy``), so layer names and outputs line up; the error accumulates along the
    network, as it does in the artifact.
    """
    from pipeline.quant.modules import QConv2d, QLinear
    from pipeline.quant.prepare import fold_batchnorm, trace

    fp = trace(teacher)
    if fold_bn:
        fold_batchnorm(fp)
    names = [n for n, m in student.named_modules() if isinstance(m, (QConv2d, QLinear))]
    fp_mods = dict(fp.named_modules())
    names = [n for n in names if n in fp_mods]
    acts: dict[str, dict[str, torch.Tensor]] = {"fp": {}, "q": {}}
    hooks = []
    for side, model in (("fp", fp), ("q", student)):
        mods = dict(model.named_modules())
        for n in names:
            hooks.append(mods[n].register_forward_hook(lambda _m, _i, out, n=n, side=side: acts[side].__setitem__(n, out.detach())))
    try:
        with torch.no_grad():
            fp.eval()(x)
            student.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for i, n in enumerate(names):
        a, b = acts["fp"].get(n), acts["q"].get(n)
        if a is None or b is None or a.shape != b.shape:
            continue
        noise = float(((a - b) ** 2).sum())
        signal = float((a**2).sum())
        sqnr = 10 * np.log10(signal / noise) if noise > 0 else float("inf")
        mod = dict(student.named_modules())[n]
        rows.append({"index": i, "name": n, "kind": "linear" if isinstance(mod, QLinear) else "conv",
                     "weight_bits": int(mod.wq.bits) if hasattr(mod.wq, "bits") else None,
                     "sqnr_db": round(sqnr, 3) if np.isfinite(sqnr) else None})
    return rows


def layer_sensitivity(ctx: RunContext, teacher: torch.nn.Module, xh: torch.Tensor, fp: np.ndarray) -> dict:
    """The ``sensitivity`` block (:mod:`pipeline.quant.sensitivity`): the run's fake-quant model built and calibrated as
    the QAT stage starts (``qat`` section, the synthetic train set: why the stage's inputs hold it), each layer
    quantized alone on the held-out set. A ``paper`` run has no integer layers to act on: the block says so."""
    from pipeline.quant import sensitivity
    from pipeline.stages.qat import build_student, scheme

    q = ctx.cfg.qat
    if q.profile != "deploy":
        return sensitivity.skipped(scheme(ctx).name, f"qat.profile={q.profile}: per-layer sensitivity is measured for deploy runs only "
                                                     "(a paper run makes no integer artifact to keep layers of at 8 bits)")
    calib = torch.from_numpy(SyntheticSet.load(ctx.layout.train_set).images[: q.calib_images])
    return sensitivity.for_student(build_student(ctx), teacher, calib, xh, q.act_init, q.seed, fp, ctx.log)


def write_bench_bundle(ctx: RunContext, images: np.ndarray, fp: np.ndarray, fq: np.ndarray | None, arts: list[tuple]) -> None:
    """``bench/``: reference inputs, FP and fake-quant outputs, and each artifact's tolerance (host agreement − margin)."""
    from devices.bundle import write_bundle
    from devices.reference import Tolerance, compare

    per = max(1, images[0].nbytes)
    n = int(min(len(images), 128, max(1, BUNDLE_MAX_BYTES // per)))
    refs = {"fp": fp[:n]}
    if fq is not None:
        refs["fake_quant"] = fq[:n]
    entries = {}
    for art, out in arts:
        kind = "fake_quant" if (art.precision != "fp32" and fq is not None) else "fp"
        lsb = art.notes.get("output_scale") if kind == "fake_quant" else None
        host = compare(out[:n], refs[kind], Tolerance(0.0, None, lsb))
        slack = 2 * lsb if lsb else 1e-3 * float(np.abs(refs[kind]).max() or 1.0)
        entries[art.path.name] = {
            "reference": kind, "precision": art.precision,
            # the device flags full-range 8-bit weights on a CPU whose u8×s8 kernels saturate (pipeline/quant/overflow.py)
            "weight_qmax": art.notes.get("weight_qmax"),
            # with declared float layers the artifact is not 100 % integer by design: the device compares with the host's reading
            "integer_share": round(art.coverage.share, 6) if art.notes.get("float_layers") and art.coverage else None,
            "host": {k: host[k] for k in ("top1_agreement", "max_abs_diff", "mean_abs_diff", "kl") if k in host},
            "tolerance": {"min_top1_agreement": round(max(0.0, host["top1_agreement"] - AGREEMENT_MARGIN), 6),
                          "max_abs_diff": 2 * host["max_abs_diff"] + slack, "output_scale": lsb},
        }
    write_bundle(ctx.layout.bench, images[:n], refs, entries)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def per_class_agreement(outputs: np.ndarray, fp: np.ndarray) -> dict:
    """Top-1 agreement with FP per class, the class being the FP model's top-1: ``classes``, ``images`` and
    ``agreement`` (None for a class the FP model never predicts on these images)."""
    ref, got = fp.argmax(1), outputs.argmax(1)
    classes = list(range(fp.shape[1]))
    counts = [int((ref == c).sum()) for c in classes]
    agree = [float((got[ref == c] == c).mean()) if n else None for c, n in zip(classes, counts)]
    return {"classes": classes, "images": counts, "agreement": agree}


def noise(summary: dict) -> str | None:
    """Why a host latency summary (:func:`runtimes.benchmark.summarize_trials` plus ``cv``) is too noisy to compare, or None."""
    why = []
    if summary.get("unstable"):
        why.append(f"p50 differs by {summary['spread']:.1%} between {summary['trials']} trials (> {summary['spread_limit']:.0%})")
    if summary.get("cv") is not None and summary["cv"] > NOISE_CV:
        why.append(f"CV {summary['cv']:.2f} (> {NOISE_CV})")
    if summary.get("p50_ms") and summary["max_ms"] > NOISE_TAIL * summary["p50_ms"]:
        why.append(f"max {summary['max_ms']:.3g} ms > {NOISE_TAIL:g}× p50 {summary['p50_ms']:.3g} ms")
    return "; ".join(why) or None


def host_latency(pred, feeds: dict, settings, trials: int) -> dict:
    """``trials`` timed trials of ``pred`` (the first one warms up), summarised, with ``cv``, ``noisy`` and ``noise_reason``."""
    from runtimes.benchmark import summarize_trials

    warm = dataclasses.replace(settings, warmup_runs=0, warmup_min_secs=0.0)  # warmed up once: the later trials time at once
    stats = [runtimes.benchmark(pred, feeds, settings if i == 0 else warm) for i in range(trials)]
    out = summarize_trials(stats)
    out["first_ms"] = stats[0].first_ms
    out["cv"] = out["std_ms"] / out["mean_ms"] if out["mean_ms"] else None
    out["noise_reason"] = noise(out)
    out["noisy"] = out["noise_reason"] is not None
    return out


def measure(ctx: RunContext) -> dict:
    """Everything the check measures (``check.json`` without the gates); writes the bench bundle."""
    teacher, card = ctx.teacher()
    c = ctx.cfg.check
    holdout = SyntheticSet.load(ctx.layout.holdout_set)
    xh = torch.from_numpy(holdout.images)
    fp = predict(teacher, xh).numpy()
    deployable = ctx.cfg.qat.profile == "deploy"
    student = load_student(ctx)
    fq = predict(student, xh).numpy()
    from devices import isa
    from devices.protocol import saturation_flag

    host_isa = isa.capture()
    result: dict = {"holdout": {"images": len(holdout), "seed": holdout.seed, "fake_quant_vs_fp": metrics(fq, fp)}, "artifacts": {},
                    "host_isa": host_isa, "warnings": []}
    real = None
    if c.eval_data:
        xr, yr = ctx.real_data("eval")
        fp_r, fq_r = predict(teacher, torch.from_numpy(xr)).numpy(), predict(student, torch.from_numpy(xr)).numpy()
        real = (xr, yr, fp_r, fq_r)
        result["eval_data"] = {"source": str(c.eval_data), "images": int(len(yr)), "fp_accuracy": accuracy(fp_r, yr),
                               "fake_quant_accuracy": accuracy(fq_r, yr)}
        ctx.log(f"  real data ({len(yr)} images): FP {accuracy(fp_r, yr):.2%}, fake-quant {accuracy(fq_r, yr):.2%}")
    n_layers = min(len(xh), 64)
    result["layers"] = layer_sqnr(teacher, student, xh[:n_layers], fold_bn=deployable)
    if result["layers"]:
        worst = min(result["layers"], key=lambda r: r["sqnr_db"] if r["sqnr_db"] is not None else float("inf"))
        ctx.log(f"  per-layer SQNR over {len(result['layers'])} layers: lowest {worst['sqnr_db']} dB at {worst['name']}")
    result["sensitivity"] = layer_sensitivity(ctx, teacher, xh, fp)
    settings = c.bench_settings()
    bundle_arts = []
    for art in load_artifacts(ctx):
        pred = runtimes.load(art.path, threads=c.threads)
        out = runtimes.predict_batched(pred, holdout.images)
        bundle_arts.append((art, out))
        lsb = art.notes.get("output_scale")
        entry: dict = {"runtime": pred.runtime, "precision": art.precision, "size_bytes": art.size_bytes,
                       "vs_fp": metrics(out, fp), "vs_fake_quant": metrics(out, fq, lsb) if art.precision != "fp32" and deployable else None,
                       "per_class_agreement": per_class_agreement(out, fp)}
        if real is not None:
            xr, yr, fp_r, _ = real
            out_r = runtimes.predict_batched(pred, xr)
            entry["accuracy"] = accuracy(out_r, yr)
            entry["vs_fp_eval_data"] = metrics(out_r, fp_r)  # what check.min_agreement judges when the run has real data
        if c.bench:
            feeds = runtimes.prepare_feeds(pred, holdout.images[:1])  # layout and integer edge as the artifact wants
            ctx.log(f"  benchmarking {art.path.name} on {pred.runtime} ({c.threads} thread, {c.trials} trial{'s' if c.trials > 1 else ''})")
            entry["latency"] = host_latency(pred, feeds, settings, c.trials)
            entry["latency"]["threads"] = c.threads
            if entry["latency"]["noisy"]:
                ctx.log(f"  {art.path.name}: host latency is noisy ({entry['latency']['noise_reason']}): not a speed-up figure")
            entry["op_profile"] = op_profile(pred, feeds)  # the runtime's own per-op figures (runtimes/profiling.py)
            ctx.log(f"  {art.path.name}: {profile_line(entry['op_profile'])}")
        if c.accelerators:  # the same checks on each other accelerator asked for (check.accelerators, pipeline/accelerators.py)
            from pipeline.accelerators import measure_artifact

            refs = {"fp": fp, "fake_quant": fq if deployable else None, "default": out}
            found, notes = measure_artifact(art, pred.runtime, c.accelerators, holdout.images, refs, c.threads,
                                            ctx.cfg.export.min_integer_coverage, ctx.log)
            entry.update({"accelerators": found} if found else {})
            result["warnings"] += notes
        warning = saturation_flag(pred.runtime, art.notes.get("weight_qmax"), host_isa)
        if warning:  # this host's own check is then not what the artifact computes on a VNNI x86 or ARM
            result["warnings"].append(f"{art.path.name}: {warning}")
            ctx.log(f"  warning: {art.path.name}: {warning}")
        result["artifacts"][art.path.name] = entry
        ctx.log(f"  {art.path.name}: agreement with FP {entry['vs_fp']['top1_agreement']:.1%}"
                + (f", real accuracy {entry['accuracy']:.2%}" if "accuracy" in entry else ""))
    write_bench_bundle(ctx, holdout.images, fp, fq if deployable else None, bundle_arts)
    return result


def judge(result: dict, check_cfg) -> dict:
    """``result`` with the ``gates`` block and each artifact's ``status`` (:mod:`pipeline.gates`) for ``check_cfg``'s thresholds."""
    block = gates.evaluate(result, check_cfg)
    for name, status in gates.statuses(block, list(result["artifacts"])).items():
        result["artifacts"][name]["status"] = status
    result["gates"] = block
    return result


def measurement_key(ctx: RunContext) -> str:
    """The check stage's key with the gate thresholds left out: what the measurements depend on.

    Computed by the runner's own :meth:`~pipeline.runner.Runner.key` on the config with :data:`pipeline.gates.GATES`
    unset, so it follows whatever the stage's key covers (sections, inputs, model, ``--eval-data``).
    """
    from pipeline.runner import Runner
    from pipeline.stages import STAGES

    unjudged = copy.copy(ctx)  # shares the memo (model, digest, real data): nothing is loaded twice
    unjudged.cfg = dataclasses.replace(ctx.cfg, check=dataclasses.replace(ctx.cfg.check, **{g: None for g in gates.GATES}))
    return Runner(STAGES, unjudged, force=True).key(next(s for s in STAGES if s.name == "check"))  # force: only reads


def previous_measurements(ctx: RunContext, key: str) -> dict | None:
    """The last check's measurements when only the gate thresholds changed since (same :func:`measurement_key`, its
    outputs untouched); None when the check must measure: never ran, other inputs, or asked to redo (``--from check``
    re-runs a stage whose key is unchanged, and then the measurements are redone)."""
    from pipeline.runner import Runner
    from pipeline.stages import STAGES

    runner = Runner(STAGES, ctx, force=True)  # force: a manifest it cannot read is no error here, only no reuse
    rec = runner.manifest["stages"].get("check")
    if ctx.stage_key is None or not rec or rec.get("key") == ctx.stage_key or not ctx.layout.check_result.exists():
        return None
    try:
        previous = json.loads(ctx.layout.check_result.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict) or previous.get("measurement_key") != key:
        return None
    if not runner.fresh(next(s for s in STAGES if s.name == "check"), rec["key"]):  # check.json or the bundle was modified
        return None
    return previous


def run(ctx: RunContext) -> None:
    key = measurement_key(ctx)
    result = previous_measurements(ctx, key)
    if result is None:
        result = measure(ctx)
    else:
        ctx.log("  only the gate thresholds changed: judging the last check's measurements again (nothing re-measured)")
    result["measurement_key"] = key
    judge(result, ctx.cfg.check)
    for rule in result["gates"]["rules"]:
        ctx.log(f"  gate {rule['gate']} {rule['artifact']}: {'pass' if rule['passed'] else 'FAIL'} "
                f"({rule['value']} vs {rule['threshold']}, {rule['measured_on']})")
    write_json(ctx.layout.check_result, result)


def outputs(ctx: RunContext) -> list[Path]:
    from devices.bundle import bundle_files

    return [ctx.layout.check_result, *bundle_files(ctx.layout.bench)]


def inputs(ctx: RunContext) -> list[Path]:
    from pipeline.stages.export import outputs as export_outputs

    # the train set: the per-layer sensitivity calibrates on it (pipeline/quant/sensitivity.py)
    return [ctx.layout.holdout_set, ctx.layout.train_set, *export_outputs(ctx)]


def key_extra(ctx: RunContext) -> dict:
    """``--eval-data`` as a digest of what the loader reads, folder or file (the runner's input hashes take files only):
    an edited, added or moved image re-runs the check; a dot entry or a non-image file does not."""
    data = ctx.cfg.check.eval_data
    extra = {"eval_data": digest(data, ctx.cfg.check.eval_transform)} if data else {}
    if ctx.cfg.check.accelerators:  # each choice's integer gate is judged on this export setting (pipeline/accelerators.py)
        extra["min_integer_coverage"] = ctx.cfg.export.min_integer_coverage
    return extra


__all__ = ["run"]
