"""report.json (documented schema) and report.html, opened in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_devices import TINY, device_run  # noqa: F401  (the module pytest loaded, so one session-wide run for all files)

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


HOST_BENCH = {"warmup_runs": 1, "warmup_min_secs": 0.0, "num_runs": 5, "min_secs": 0.0, "max_secs": 5.0}


def host_check(device_run: dict, min_agreement: float | None = 0.5) -> dict:  # noqa: F811
    """check.json of ``device_run``'s artifacts as the check stage makes it: real outputs of each artifact on the run's
    images (agreement, per-class agreement), real host latency over two trials, judged by the real gates."""
    from types import SimpleNamespace

    import torch

    import runtimes
    from devices.reference import metrics
    from pipeline.stages.check import host_latency, judge, layer_sqnr, per_class_agreement
    from runtimes.benchmark import BenchSettings

    x = device_run["x"]
    with torch.no_grad():
        fp, fq = device_run["model"](x).numpy(), device_run["student"](x).numpy()
    result = {"holdout": {"images": len(x), "seed": 1000, "fake_quant_vs_fp": metrics(fq, fp)}, "warnings": [], "artifacts": {},
              "layers": layer_sqnr(device_run["model"], device_run["student"], x, fold_bn=True)}
    for art in device_run["artifacts"]:
        pred = runtimes.load(art.path, threads=1)
        out = runtimes.predict_batched(pred, x.numpy())
        lat = host_latency(pred, runtimes.prepare_feeds(pred, x.numpy()[:1]), BenchSettings(**HOST_BENCH), 2)
        result["artifacts"][art.path.name] = {
            "runtime": pred.runtime, "precision": art.precision, "size_bytes": art.size_bytes, "vs_fp": metrics(out, fp),
            "vs_fake_quant": metrics(out, fq, art.notes.get("output_scale")) if art.precision != "fp32" else None,
            "per_class_agreement": per_class_agreement(out, fp), "latency": {**lat, "threads": 1}}
    return judge(result, SimpleNamespace(min_agreement=min_agreement, max_accuracy_drop=None))


@pytest.fixture(scope="module")
def report_run(device_run):  # noqa: F811
    """The artifacts of ``device_run`` as a run folder: export.json, a real check.json (gates, per-class agreement, host
    latency, per-layer SQNR), qat.json with a loss curve, stage timings, and real device results (pipeline bench)."""
    from pipeline.cli import main
    from pipeline.runner import write_json

    run = device_run["dir"]
    write_json(run / "export.json", {"artifacts": [a.to_dict(run) for a in device_run["artifacts"]], "card": device_run["card"].to_dict()})
    write_json(run / "check.json", host_check(device_run))
    (run / "qat").mkdir(exist_ok=True)
    curve = [round(2.0 * 0.97**i + 0.05, 5) for i in range(100)]
    write_json(run / "qat" / "qat.json", {"scheme": "w8a8", "profile": "deploy", "method": "bn-inversion", "steps": 400, "seconds": 12.5,
                                          "weight_grid": "full range (±127 at 8 bits)", "holdout_agreement_after_init": 0.8125,
                                          "holdout_agreement_after_qat": 1.0, "loss_first": curve[0], "loss_last": curve[-1],
                                          "loss_curve": curve, "meta": {"first_last_bits": None}})
    write_json(run / "manifest.json", {"stages": {name: {"key": "k", "outputs": {}, "seconds": secs, "finished": "2026-01-01T00:00:00",
                                                         "ran_on": {"accelerator": "cpu", "precision": "fp32"}}
                                                  for name, secs in (("synth", 3.5), ("qat", 12.5), ("export", 4.25), ("check", 2.0))}})
    write_json(run / "config.json", {"_type": "zsq.RunConfig", "_version": 1, "_data": {"synthesis": {"method": "bn-inversion"}}})
    assert main(["bench", "--artifact", str(device_run["fp32"]), "--artifact", str(device_run["int8"]), *TINY, "--quiet"]) == 0
    return run


def variant(report_run, dest, check: dict | None = None, edit_results=None):  # noqa: F811
    """A copy of the fixture's run folder with its check.json replaced and its device results edited (no new pipeline run)."""
    from pipeline.runner import write_json

    shutil.copytree(report_run, dest, ignore=shutil.ignore_patterns(".lock", "report.*"))
    if check is not None:
        write_json(dest / "check.json", check)
    for path in sorted((dest / "bench" / "results").glob("*/*.json")):
        if edit_results:
            r = json.loads(path.read_text())
            edit_results(path.name.removesuffix(".json"), r)
            path.write_text(json.dumps(r))
    return dest


def test_layer_sqnr_follows_the_network(device_run):  # noqa: F811
    from pipeline.quant.prepare import quant_layers
    from pipeline.stages.check import layer_sqnr

    rows = layer_sqnr(device_run["model"], device_run["student"], device_run["x"], fold_bn=True)
    assert len(rows) == len(quant_layers(device_run["student"])) == 22  # 21 convs + the classifier of ResNet-20
    assert rows[0]["name"] == "conv1" and rows[-1]["kind"] == "linear"
    assert all(r["sqnr_db"] is not None and 5 < r["sqnr_db"] < 80 for r in rows)


SECTIONS = ("gates", "artifacts", "bits", "latency", "speedup", "cold", "size", "accuracy", "per-class", "sqnr", "qat", "stages", "devices")


def test_report_json_follows_its_schema_file(report_run, capsys):
    from pipeline.cli import main
    from pipeline.reporting.schema import REPORT_SCHEMA, validate

    assert main(["report", str(report_run)]) == 0
    out = capsys.readouterr().out
    assert "device local" in out and "int vs FP32 on local" in out and "gates: passed, exit status 0" in out
    report = json.loads((report_run / "report.json").read_text())
    assert validate(report) == []
    assert report["schema_version"] == 3 and len(report["devices"]) == 2 and report["speedups"] and report["exit_status"] == 0
    assert [r["gate"] for r in report["gates"]["rules"]] == ["min_agreement", "device", "device"]
    assert all("samples_ms" not in t for d in report["devices"] for r in d["runs"] for t in r["trials"])  # they stay in the result files
    assert all(isinstance(s["noisy"], bool) and "why" in s for s in report["speedups"])
    # the schema is a file, printed as is, and rejects what breaks it
    printed = subprocess.run([sys.executable, "-m", "pipeline.reporting.schema"], capture_output=True, text=True, timeout=60)
    assert json.loads(printed.stdout) == REPORT_SCHEMA == json.loads(
        (Path(__file__).parents[1] / "pipeline" / "reporting" / "report.schema.json").read_text())
    broken = json.loads(json.dumps(report))
    broken["exit_status"] = 3
    broken["devices"][0]["status"] = "fine"
    del broken["speedups"][0]["noisy"]
    broken["check"]["artifacts"]["model.w8a8.onnx"]["per_class_agreement"]["agreement"][0] = 1.5
    errors = "\n".join(validate(broken))
    for where in ("report.exit_status", "report.devices[0].status", "report.speedups[0]", "report.check.artifacts.model.w8a8.onnx.per_class_agreement"):
        assert where in errors, errors
    assert "'noisy' is a required property" in errors and "'devices' is a required property" in " ".join(validate({}))


def test_report_html_is_self_contained_with_every_section(report_run):
    html = (report_run / "report.html").read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<img" not in html and "<link" not in html
    for cls in ("boxes", "bars", "line"):
        assert f'class="chart {cls}"' in html
    for section in SECTIONS:
        assert f'<h2 id="{section}">' in html, section
    # title: the run folder, model and scheme; footer: the command that wrote the page
    assert f"<title>zsq-edge: {report_run.name} (resnet20, w8a8)</title>" in html and "by <code>pipeline report</code>" in html
    # what was collected is shown, numbers printed (not only in hover titles)
    assert "first inference ms" in html and "RSS peak (cold) MiB" in html  # device cold start and memory
    assert "QAT loss (every 4th step)" in html and "81.25%" in html  # qat.json: curve and agreement after range init
    assert html.count('class="value"') >= 22 + 2 + 4  # SQNR points, latency boxes, stage bars...
    assert "class (FP top-1)" in html  # per-class agreement table
    # FP32 and integer: one colour each, everywhere, and each pair adjacent
    from pipeline.reporting.svg import FP32_COLOR, INT_COLOR

    assert html.count(f'fill="{FP32_COLOR}"') >= 2 and html.count(f'fill="{INT_COLOR}"') >= 2
    artifacts = re.findall(r'<span class="sw (\w+)"></span>(model\.[\w.]+)', html.split('<h2 id="artifacts">')[1].split("</table>")[0])
    assert artifacts == [("fp32", "model.fp32.onnx"), ("int", "model.w8a8.onnx")]


def test_the_report_stage_names_pipeline_run(report_run, tmp_path):
    from types import SimpleNamespace

    from pipeline.stages import report

    run = variant(report_run, tmp_path / "run")
    report.run(SimpleNamespace(run_dir=run))  # what the runner calls for `pipeline run`; the stage needs only the folder
    html = (run / "report.html").read_text()
    assert "by <code>pipeline run</code>" in html and "pipeline report" not in html.split("<footer")[1]


def _status_of(html: str, artifact: str, where: str) -> tuple[str, str]:
    """(css kind, word) of the status cell of ``artifact``'s row in the accuracy table, for ``where`` (host check or a device)."""
    table = html.split('<h2 id="accuracy">')[1].split("</table>")[0]
    for row in table.split("<tr>")[2:]:
        if artifact in row and f">{where}<" in row:
            m = re.search(r'<span class="status (\w+)">([\w ]+)</span>', row)
            return m.group(1), m.group(2)
    raise AssertionError(f"no row for {artifact} on {where}")


def test_low_agreement_fails_red_never_green_and_unchecked_is_neutral(report_run, device_run, tmp_path, capsys):  # noqa: F811
    from pipeline.cli import main
    from pipeline.stages.check import judge

    check = json.loads((report_run / "check.json").read_text())
    check["artifacts"]["model.w8a8.onnx"]["vs_fp"]["top1_agreement"] = 0.4375  # 7 of 16 images
    from types import SimpleNamespace

    judge(check, SimpleNamespace(min_agreement=0.9, max_accuracy_drop=None))

    def no_reference(name, r):  # an agent that had no reference data: nothing compared
        if name == "model.fp32.onnx":
            r["reference"], r["reference_kind"], r["status"] = None, None, "ok"  # what an older agent wrote

    run = variant(report_run, tmp_path / "low", check, no_reference)
    assert main(["report", str(run)]) == 5
    captured = capsys.readouterr()
    assert "quality gate failed: model.w8a8.onnx" in captured.err and "FAIL" in captured.out
    html = (run / "report.html").read_text()
    assert _status_of(html, "model.w8a8.onnx", "host check") == ("bad", "fail")
    assert _status_of(html, "model.fp32.onnx", "host check") == ("neutral", "not gated")
    assert _status_of(html, "model.fp32.onnx", "local") == ("neutral", "unchecked")
    assert _status_of(html, "model.w8a8.onnx", "local") == ("ok", "ok")
    gates = html.split('<h2 id="gates">')[1].split('<h2 id="artifacts">')[0]
    assert '<span class="status bad">fail</span>' in gates and "exit status <b>5</b>" in gates and "43.75%" in gates
    report = json.loads((run / "report.json").read_text())
    assert report["exit_status"] == 5 and {d["artifact"]["name"]: d["status"] for d in report["devices"]}["model.fp32.onnx"] == "unchecked"

    def mismatch(name, r):
        if name == "model.w8a8.onnx":
            r["status"] = "mismatch"

    run = variant(report_run, tmp_path / "mismatch", None, mismatch)
    assert main(["report", str(run)]) == 7
    assert _status_of((run / "report.html").read_text(), "model.w8a8.onnx", "local") == ("bad", "mismatch")
    # several runs: the worst status of them all (a quality gate before a device mismatch)
    assert main(["report", str(run), str(tmp_path / "low"), "--html", str(tmp_path / "cmp.html")]) == 5


def test_noisy_latency_is_never_a_plain_speed_up(report_run, tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.stages.report import summary

    check = json.loads((report_run / "check.json").read_text())
    fp, it = check["artifacts"]["model.fp32.onnx"], check["artifacts"]["model.w8a8.onnx"]
    # what was seen on a shared host: one trial, CV 0.67, max 13.9 ms at p50 0.80 ms
    fp["latency"] = {"p50_ms": 0.80, "p90_ms": 1.9, "p99_ms": 9.5, "mean_ms": 1.2, "std_ms": 0.80, "min_ms": 0.61, "max_ms": 13.9, "cv": 0.67,
                     "threads": 1, "n": 100}
    it["latency"] = {**it["latency"], "p50_ms": 0.40, "noisy": False, "noise_reason": None}
    run = variant(report_run, tmp_path / "noisy", check, lambda name, r: r["runs"][0]["steady"].update(unstable=False, spread=0.01))
    assert main(["report", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    host = next(s for s in report["speedups"] if s["device"] == "host check")
    assert host["speedup"] == pytest.approx(2.0) and host["noisy"] is True
    assert "FP32" in host["why"] and "CV 0.67" in host["why"] and "one trial" in host["why"] and "integer" not in host["why"]
    local = next(s for s in report["speedups"] if s["device"] == "local")
    assert local["noisy"] is False and local["why"] is None
    text = summary(report)
    assert "2.00x (0.800 → 0.400 ms p50) NOISY" in text and "NOISY" not in next(ln for ln in text.splitlines() if "int vs FP32 on local" in ln)
    html = (run / "report.html").read_text()
    speed = html.split('<h2 id="speedup">')[1].split("<h2")[0]
    assert speed.count('<tspan fill="#8a5a00" font-weight="600">noisy</tspan>') == 1 and speed.count('<span class="noisy"') == 1
    assert "CV 0.67" in html.split('<h2 id="latency">')[1].split("<h2")[0]


def test_flat_summary_formats_parse(report_run, tmp_path, capsys):
    import csv
    import io

    from pipeline.cli import main
    from pipeline.reporting.compare import COLUMNS

    runs = [variant(report_run, tmp_path / n) for n in ("a", "b", "c")]
    names = [str(r) for r in runs]
    for fmt in ("csv", "json", "md"):
        assert main(["report", *names, "--format", fmt, "--html", str(tmp_path / "cmp.html")]) == 0
        out = capsys.readouterr().out
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(out)))
            assert list(rows[0]) == COLUMNS
        elif fmt == "json":
            rows = json.loads(out)
        else:
            lines = out.strip().splitlines()
            assert lines[1].startswith("|---") and all(ln.count("|") == len(COLUMNS) + 1 for ln in lines)
            rows = [dict(zip(COLUMNS, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]
        assert [(r["run"], r["artifact"]) for r in rows] == [(n, a) for n in names for a in ("model.fp32.onnx", "model.w8a8.onnx")]
        assert {str(r["status"]) for r in rows} == {"pass", "not gated"} and all(r["p50_ms"] not in ("", None) for r in rows)


def test_slowest_ops_from_the_host_and_each_device(report_run, device_run, tmp_path, capsys):  # noqa: F811
    """The check's and each device's op profile (runtimes/profiling.py: the runtimes' own profilers) in report.json,
    following the schema, in the printed summary, and in the page's "Slowest ops" section: per artifact, the host check
    then each device, with the caveat that these are the runtime's own figures and the shares are what to read."""
    import runtimes
    from pipeline.cli import main
    from pipeline.reporting.schema import validate
    from runtimes.profiling import op_profile

    check = json.loads((report_run / "check.json").read_text())
    for art in device_run["artifacts"]:  # what the check stage stores when it benchmarks
        pred = runtimes.load(art.path, threads=1)
        feeds = runtimes.prepare_feeds(pred, device_run["x"].numpy()[:1])
        check["artifacts"][art.path.name]["op_profile"] = op_profile(pred, feeds, runs=3, warmup=1)
    run = variant(report_run, tmp_path / "ops", check)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "slowest ops model.w8a8.onnx (host check): op profile (onnxruntime, 3 runs" in out
    assert "slowest ops model.w8a8.onnx (local): op profile (onnxruntime" in out  # pipeline bench profiled it on the device
    report = json.loads((run / "report.json").read_text())
    assert validate(report) == [] and all(d["op_profile"]["ops"] for d in report["devices"])
    broken = json.loads(json.dumps(report))
    broken["check"]["artifacts"]["model.w8a8.onnx"]["op_profile"]["ops"][0]["share"] = 2.0
    del broken["devices"][0]["op_profile"]["total_ms"]
    errors = "\n".join(validate(broken))
    assert "report.check.artifacts.model.w8a8.onnx.op_profile.ops[0].share" in errors and "report.devices[0].op_profile" in errors
    html = (run / "report.html").read_text()
    section = html.split('<h2 id="ops">Slowest ops</h2>')[1].split("<h2 ")[0]
    assert "own profiler" in section and "read the shares, not the milliseconds" in section
    block = section.split("<h3>model.w8a8.onnx</h3>")[1].split("<h3>")[0]
    assert block.index("<b>host check</b>") < block.index("<b>local</b>") and block.count("<table") == 2
    assert block.count(">QLinearConv") >= 10 and "u8×i8" in block and "CPUExecutionProvider" in block
    assert "<h3>model.fp32.onnx</h3>" in section


def test_pareto_front_across_runs(report_run, tmp_path):
    from types import SimpleNamespace

    from pipeline.cli import main
    from pipeline.reporting.compare import pareto
    from pipeline.stages.check import judge

    assert pareto([(1.0, 0.9), (2.0, 0.95), (2.5, 0.9), (None, 1.0), (1.0, 0.9)]) == {0, 1, 4}
    check = json.loads((report_run / "check.json").read_text())
    for name, e in check["artifacts"].items():  # run "slow": every artifact slower and less faithful than in run "fast"
        e["vs_fp"]["top1_agreement"] = 0.5
        e["latency"] = {**e["latency"], "p50_ms": e["latency"]["p50_ms"] * 10}
    judge(check, SimpleNamespace(min_agreement=0.4, max_accuracy_drop=None))
    fast, slow = variant(report_run, tmp_path / "fast"), variant(report_run, tmp_path / "slow", check)
    out = tmp_path / "cmp.html"
    main(["report", str(fast), str(slow), "--html", str(out)])
    html = out.read_text()
    assert "<title>zsq-edge: 2 runs compared (fast, slow)</title>" in html and "fast: model.w8a8.onnx" in html
    across = html.split('<h2 id="across">')[1]
    assert across.count('class="chart scatter"') == 2
    from pipeline.reporting.compare import rows
    from pipeline.stages.report import build_report

    table = rows([build_report(fast), build_report(slow)])
    assert not any(r["pareto"] for r in table if r["run"] == str(slow))
    assert any(r["pareto"] for r in table if r["run"] == str(fast))
    lat = across.split('class="chart scatter"')[2].split("</svg>")[0]
    front = sum(r["pareto"] for r in table)
    assert lat.count('<g class="pareto">') == front and lat.count('class="dominated"') == len(table) - front == 4 - front


def test_trained_vs_deployed_bits_are_explained():
    from pipeline.reporting.html import bits_explanation

    rep = {"qat": {"scheme": "w4a4", "meta": {"first_last_bits": 8}},
           "artifacts": [{"path": "model.fp32.onnx", "precision": "fp32"},
                         {"path": "model.w4a8.onnx", "precision": "w4a8", "notes": {"trained_bits": "w4a4", "weight_qmax": 7}},
                         {"path": "model.w8a8.tflite", "precision": "w8a8", "notes": {"trained_bits": "w4a4", "mode": "ptq-calibrated"}}]}
    onnx, tflite = bits_explanation(rep)
    assert onnx.startswith("model.w4a8.onnx: trained w4a4, deployed w4a8")
    assert "4-bit grid (integers within ±7) stored in int8 tensors" in onnx and "activations trained at 4 bits run at 8 bits" in onnx
    assert "first and last layers at 8 bits" in onnx
    assert "trained w4a4, deployed w8a8" in tflite and "calibrated post-training" in tflite


def test_worst_layers_table_chart_and_flags(report_run, device_run, tmp_path, capsys):  # noqa: F811
    """check.json's per-layer sensitivity (measured for real on the fixture's ResNet-20 at W4A4) on the page: the worst
    layers ranked, a bar each, what they cost in MACs, and the --layer-bits flags to copy; one line in the summary."""
    from html import escape

    from pipeline.cli import main
    from pipeline.quant.prepare import quantize_model
    from pipeline.quant.scheme import BitScheme
    from pipeline.quant.sensitivity import for_student
    from pipeline.reporting.layers import SHOWN
    from pipeline.reporting.schema import validate

    assert '<h2 id="layers">' in (report_run / "report.html").read_text()  # a check without the block: the section says so
    model, x = device_run["model"], device_run["x"]
    block = for_student(quantize_model(model, BitScheme.parse("w4a4")), model, x, x)
    check = json.loads((report_run / "check.json").read_text())
    run = variant(report_run, tmp_path / "layers", {**check, "sensitivity": block})
    assert main(["report", str(run)]) == 0
    worst = sorted(block["layers"], key=lambda r: r["rank"])
    summary = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("worst layers"))
    assert summary.startswith(f"worst layers (w4a4, each quantized alone): {worst[0]['name']} (KL")
    assert block["suggested_cli"] and summary.endswith(f"add: {block['suggested_cli']}")
    assert validate(json.loads((run / "report.json").read_text())) == []
    html = (run / "report.html").read_text()
    section = html.split('<h2 id="layers">')[1].split("<h2 ")[0]
    table = section.split('<table class="layers">')[1].split("</table>")[0]
    names = re.findall(r"<td class=\"l\"><code>([\w.]+)</code></td>", table)
    assert names == [r["name"] for r in worst[:SHOWN]] and table.count("<tr>") == SHOWN + 1
    assert table.count("<b>keep at w8a8</b>") == 3 and "MACs share" in table and "w4a4" in table
    assert section.count('class="bar"') == SHOWN and section.count(">suggested</tspan>") == 3
    assert "<pre><code>" + escape(block["suggested_cli"]) + "</code></pre>" in section  # copyable, quotes and all
    assert "do not add up" in section and "does not predict" in section


def test_report_rejects_what_is_not_a_run(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["report", str(tmp_path / "nothing")]) == 3
    assert "not a run folder" in capsys.readouterr().err


def test_report_renders_in_headless_chromium(report_run, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's chromium)")
    url = (report_run / "report.html").resolve().as_uri()
    common = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-500:]
    text = dom.stdout
    for section in SECTIONS:  # the browser parsed every section
        assert f'<h2 id="{section}">' in text, section
    charts = re.findall(r'<svg class="chart (\w+)"', text)
    assert {"boxes", "bars", "line"} <= set(charts) and len(charts) >= 6
    assert len(re.findall(r"<rect class=\"bar\"", text)) >= 3 + 4  # speed-up, two sizes, four stages
    assert len(re.findall(r'<circle class="point"', text)) == 22 + 100  # one per layer, one per loss point
    assert len(re.findall(r"<g class=\"box\">", text)) == 4  # fp32 and int8 on local and in the host check
    statuses = re.findall(r'<span class="status (\w+)">([\w ]+)</span>', text)
    assert ("ok", "pass") in statuses and ("neutral", "not gated") in statuses and all(
        k == {"pass": "ok", "ok": "ok", "fail": "bad", "mismatch": "bad"}.get(w, "neutral") for k, w in statuses)
    png = tmp_path / "report.png"
    shot = subprocess.run([*common, "--window-size=1200,4800", f"--screenshot={png}", url], capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0 and png.exists(), shot.stderr[-500:]
    from PIL import Image

    import numpy as np

    img = Image.open(png).convert("RGB")
    assert img.size == (1200, 4800)  # the whole page down to the per-layer charts
    px = np.asarray(img).astype(int)
    colored = ((np.abs(px[..., 0] - px[..., 1]) > 40) | (np.abs(px[..., 1] - px[..., 2]) > 40)).sum()  # bars, boxes, the SQNR line
    assert colored > 5000
