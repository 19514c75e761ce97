"""Per-layer sensitivity (pipeline/quant/sensitivity.py) on the bundled ResNet-20: each layer quantized alone.

Real numbers on small sets: 64 BN-inversion images of the bundled model (32 calibrate the ranges, 32 are measured),
W2A2 so that one layer alone moves the output enough to rank the layers.
"""

from __future__ import annotations

import dataclasses
import shlex

import numpy as np
import pytest
import torch

from devices.reference import metrics
from pipeline.quant import sensitivity as S

BITS = "w2a2"


@pytest.fixture(scope="module")
def measured(bundled) -> dict:
    from pipeline.quant.prepare import quantize_model
    from pipeline.quant.qat import predict
    from pipeline.quant.scheme import BitScheme
    from pipeline.synthesis import create_method

    teacher, card = bundled
    pool = create_method("bn-inversion", {"batch_size": 64, "iterations": 20}).synthesize(teacher, card, 64, seed=0)
    x = torch.from_numpy(pool.images)
    calib, holdout = x[:32], x[32:]
    fresh = quantize_model(teacher, BitScheme.parse(BITS), "deploy")
    model = S.calibrated(fresh, calib, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = predict(teacher, holdout)
    out_before = predict(model, holdout)
    rows = S.measure(model, holdout, ref)
    return {"teacher": teacher, "model": model, "x": holdout, "ref": ref, "rows": rows, "before": before, "out_before": out_before,
            "layers": fresh.zsq_meta["layers"]}


def _alone(model, x, ref, weight_of: str | None = None, quantizers: tuple[str, ...] = ()) -> dict:
    """The model with every quantizer off but the named ones, run as a plain forward pass (no replay), vs ``ref``."""
    work = S._copy(model)
    S.set_quantizers(work, False)
    named = dict(work.named_modules())
    if weight_of:
        named[weight_of].wq.enabled = True
    for q in quantizers:
        named[q].enabled = True
    with torch.no_grad():
        return metrics(work(x).numpy(), ref.numpy())


def test_each_row_quantizes_that_layer_alone(measured):
    m, rows = measured, {r.name: r for r in measured["rows"]}
    assert [r.name for r in measured["rows"]] == m["layers"] and len(rows) == 22  # network order, the shared layer names
    assert [r.index for r in measured["rows"]] == list(range(22))
    nothing = _alone(m["model"], m["x"], m["ref"])  # every quantizer off: the BN-folded twin is the FP model
    assert nothing["kl"] < 1e-9 and nothing["top1_agreement"] == 1.0
    for name in ("conv1", "layers.3.shortcut.0", "fc"):
        r = rows[name]
        assert r.kind == ("linear" if name == "fc" else "conv") and r.weight_bits == 2 and r.act_bits == 2
        feeds = tuple(S.input_quantizers(m["model"], name))
        assert len(feeds) == 1  # deploy: one quantizer right before every layer
        w, a = _alone(m["model"], m["x"], m["ref"], weight_of=name), _alone(m["model"], m["x"], m["ref"], quantizers=feeds)
        assert r.weights.kl == pytest.approx(w["kl"], rel=1e-6, abs=1e-12) and r.weights.top1_agreement == w["top1_agreement"]
        assert r.activations.kl == pytest.approx(a["kl"], rel=1e-6, abs=1e-12) and r.activations.top1_agreement == a["top1_agreement"]
        assert r.weights.kl > 1e-6 and r.activations.kl > 1e-6 and r.weights.kl != r.activations.kl


def test_ranking_is_by_score_and_puts_a_known_sensitive_layer_on_top(measured):
    rows = measured["rows"]
    by_rank = sorted(rows, key=lambda r: r.rank)
    assert sorted(r.rank for r in rows) == list(range(1, 23))
    assert all(r.score == max(r.weights.kl, r.activations.kl) for r in rows)
    assert all(a.score >= b.score for a, b in zip(by_rank, by_rank[1:]))
    # at W2A2 the classifier (its 2-bit input above all) and the first conv are the ones everyone expects: true on these
    # synthetic images (fc first) and on real Fashion-MNIST images (conv1 first, fc third)
    assert {"fc", "conv1"} & {r.name for r in by_rank[:3]}, [(r.name, r.score) for r in by_rank[:5]]
    # isolated sensitivities do not add up, but all layers together cost more than the worst one alone
    together = metrics(measured["out_before"].numpy(), measured["ref"].numpy())
    assert together["kl"] > by_rank[0].score


def test_macs_come_from_the_layer_shapes(measured):
    rows = {r.name: r for r in measured["rows"]}
    assert rows["conv1"].macs == 28 * 28 * 16 * 1 * 3 * 3
    assert rows["layers.3.shortcut.0"].macs == 14 * 14 * 32 * 16  # 1×1, stride 2, 16 → 32 channels
    assert rows["layers.8.conv2"].macs == 7 * 7 * 64 * 64 * 3 * 3
    assert rows["fc"].macs == 64 * 10


def test_the_model_measured_is_not_changed(measured):
    from pipeline.quant.prepare import quant_layers, quantizers
    from pipeline.quant.qat import predict

    model = measured["model"]
    after = model.state_dict()
    assert after.keys() == measured["before"].keys() and all(torch.equal(after[k], v) for k, v in measured["before"].items())
    assert all(q.enabled for q in quantizers(model)) and all(layer.wq.enabled for layer in quant_layers(model))
    assert torch.equal(predict(model, measured["x"]), measured["out_before"])


def test_suggestion_skips_layers_at_8_bits_and_its_flags_apply(measured, bundled):
    from pipeline.quant.prepare import quantize_model
    from pipeline.quant.scheme import BitScheme, layer_bits_option, layer_matches

    rows = measured["rows"]
    by_rank = sorted(rows, key=lambda r: r.rank)
    picked = S.suggest(rows)
    assert [r.name for r in picked] == [r.name for r in by_rank[:3]]
    # the worst layer already at 8 bits (first_last_bits, layer_bits) and the second kept float: listed, not suggested
    settled = {by_rank[0].name: dataclasses.replace(by_rank[0], weight_bits=8, act_bits=8),
               by_rank[1].name: dataclasses.replace(by_rank[1], weight_bits=None, weights=None)}
    edited = [settled.get(r.name, r) for r in rows]
    assert [r.name for r in S.suggest(edited)] == [r.name for r in by_rank[2:5]]
    block = S.block(edited, BITS, 32, 32, "mse", 1.0)
    assert len(block["layers"]) == 22 and block["suggested_layer_bits"] == {r.name: "w8a8" for r in by_rank[2:5]}
    # the flags are what the CLI parses, and they put exactly those layers at W8A8
    args = shlex.split(block["suggested_cli"])
    assert args[0::2] == ["--layer-bits"] * 3 and all(f"'{a}'" in block["suggested_cli"] for a in args[1::2])
    layer_bits = layer_bits_option(args[1::2])
    assert layer_bits == block["suggested_layer_bits"]
    scheme = dataclasses.replace(BitScheme.parse(BITS), layer_bits=tuple(layer_bits.items()))
    meta = quantize_model(bundled[0], scheme, "deploy").zsq_meta["layer_bits"]
    assert {n for n, b in meta.items() if b == "w8a8"} == set(layer_bits)
    # a layer name with glob characters is escaped to match that layer alone
    flag = shlex.split(S.cli_flags(["blocks[0].conv*"]))[1].rpartition("=")[0]
    assert layer_matches(flag, "blocks[0].conv*") and not layer_matches(flag, "blocks0.conv1")


def test_the_block_follows_the_report_schema(measured):
    from pipeline.reporting.schema import REPORT_SCHEMA, validate

    schema = {"$ref": "#/$defs/sensitivity", "$defs": REPORT_SCHEMA["$defs"]}
    block = S.block(measured["rows"], BITS, 32, 32, "mse", 2.5)
    assert validate(block, schema) == []
    assert block["passes"] == 44 and block["total_macs"] == sum(r.macs for r in measured["rows"])
    assert block["layers"][0]["name"] == "conv1" and block["layers"][0]["float"] is False
    broken = {**block, "layers": [{**block["layers"][0], "rank": 0, "kind": "pool"}]}
    errors = "\n".join(validate(broken, schema))
    assert "rank" in errors and "'pool' is not one of" in errors


def test_a_paper_run_says_why_it_has_no_table(tmp_path):
    from pipeline.config import build_config
    from pipeline.runner import RunContext
    from pipeline.stages.check import layer_sensitivity

    cfg = build_config("tiny", None, {"out": str(tmp_path)}, ["qat.profile=paper", "qat.bits=w4a4"])
    block = layer_sensitivity(RunContext(cfg, tmp_path, log=print), torch.nn.Identity(), torch.zeros(1), np.zeros((1, 10)))
    assert block["layers"] == [] and block["suggested_cli"] == "" and "deploy runs only" in block["skipped"]
