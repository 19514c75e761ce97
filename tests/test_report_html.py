"""report.json (documented schema) and report.html, opened in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from test_devices import TINY, device_run  # noqa: F401  (the module pytest loaded, so one session-wide run for all files)

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report_run(device_run, tmp_path_factory):  # noqa: F811
    """The artifacts of ``device_run`` as a run folder: export.json, check.json with per-layer SQNR, device results."""
    from pipeline.cli import main
    from pipeline.runner import write_json
    from pipeline.stages.check import layer_sqnr

    run = device_run["dir"]
    write_json(run / "export.json", {"artifacts": [a.to_dict(run) for a in device_run["artifacts"]], "card": device_run["card"].to_dict()})
    layers = layer_sqnr(device_run["model"], device_run["student"], device_run["x"], fold_bn=True)
    write_json(run / "check.json", {"holdout": {"images": 16, "seed": 1000, "fake_quant_vs_fp": {"top1_agreement": 1.0}}, "layers": layers,
                                    "artifacts": {a.path.name: {"runtime": "onnxruntime", "precision": a.precision, "size_bytes": a.size_bytes,
                                                                "vs_fp": {"top1_agreement": 1.0, "kl": 0.0}, "vs_fake_quant": None}
                                                  for a in device_run["artifacts"]}})
    write_json(run / "manifest.json", {"stages": {}})
    write_json(run / "config.json", {"_type": "zsq.RunConfig", "_version": 1, "_data": {"synthesis": {"method": "bn-inversion"}}})
    assert main(["bench", "--artifact", str(device_run["fp32"]), "--artifact", str(device_run["int8"]), *TINY, "--quiet"]) == 0
    return run


def test_layer_sqnr_follows_the_network(device_run):  # noqa: F811
    from pipeline.quant.prepare import quant_layers
    from pipeline.stages.check import layer_sqnr

    rows = layer_sqnr(device_run["model"], device_run["student"], device_run["x"], fold_bn=True)
    assert len(rows) == len(quant_layers(device_run["student"])) == 22  # 21 convs + the classifier of ResNet-20
    assert rows[0]["name"] == "conv1" and rows[-1]["kind"] == "linear"
    assert all(r["sqnr_db"] is not None and 5 < r["sqnr_db"] < 80 for r in rows)


def test_report_json_follows_its_schema(report_run, capsys):
    from pipeline.cli import main
    from pipeline.reporting.schema import REPORT_SCHEMA, validate

    assert main(["report", str(report_run)]) == 0
    out = capsys.readouterr().out
    assert "device local" in out and "int vs FP32 on local" in out
    report = json.loads((report_run / "report.json").read_text())
    assert validate(report) == []
    assert report["schema_version"] == 2 and len(report["devices"]) == 2 and report["speedups"]
    assert all("samples_ms" not in t for d in report["devices"] for r in d["runs"] for t in r["trials"])  # they stay in the result files
    assert validate({"schema_version": "2"}) and "missing 'devices'" in " ".join(validate({}))
    assert REPORT_SCHEMA["required"]


def test_report_html_is_self_contained(report_run):
    html = (report_run / "report.html").read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<img" not in html and "<link" not in html
    for cls in ("boxes", "bars", "line"):
        assert f'class="chart {cls}"' in html
    for section in ("Latency distribution", "Integer vs FP32 speed-up", "Size", "Accuracy and agreement", "Per-layer quantization error"):
        assert section in html


def test_report_compares_runs(report_run, tmp_path, capsys):
    from pipeline.cli import main

    other = tmp_path / "run_b"
    shutil.copytree(report_run, other)
    out = tmp_path / "cmp.html"
    assert main(["report", str(report_run), str(other), "--html", str(out)]) == 0
    html = out.read_text()
    assert "2 runs compared" in html and f"{other.name}: " in html
    assert main(["report", str(tmp_path / "nothing")]) == 2
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
    charts = re.findall(r'<svg class="chart (\w+)"', text)
    assert {"boxes", "bars", "line"} <= set(charts) and len(charts) >= 4
    assert len(re.findall(r"<rect class=\"bar\"", text)) >= 3  # one speed-up bar (local, onnxruntime, 1 thread), two size bars
    assert len(re.findall(r'<circle class="point"', text)) == 22  # one per layer
    assert len(re.findall(r"<g class=\"box\">", text)) == 2  # fp32 and int8 on local, 1 thread
    png = tmp_path / "report.png"
    shot = subprocess.run([*common, "--window-size=1200,2400", f"--screenshot={png}", url], capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0 and png.exists(), shot.stderr[-500:]
    from PIL import Image

    import numpy as np

    img = Image.open(png).convert("RGB")
    assert img.size == (1200, 2400)
    px = np.asarray(img).astype(int)
    colored = ((np.abs(px[..., 0] - px[..., 1]) > 40) | (np.abs(px[..., 1] - px[..., 2]) > 40)).sum()  # bars, boxes, the SQNR line
    assert colored > 5000
