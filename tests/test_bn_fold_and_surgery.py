"""BN folding is exact, and the deploy surgery places quantizers where an integer runtime needs them."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models import create_model
from pipeline.quant.modules import fold_bn
from pipeline.quant.prepare import quantize_model, quantizers
from pipeline.quant.quantizers import ActQuantizer
from pipeline.quant.scheme import BitScheme


def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)


def test_fold_bn_matches_conv_then_bn():
    conv, bn = nn.Conv2d(3, 8, 3, padding=1, groups=1, bias=True), nn.BatchNorm2d(8)
    seq = nn.Sequential(conv, bn)
    _randomize_bn(seq)
    seq.eval()
    x = torch.randn(4, 3, 9, 9)
    assert torch.allclose(fold_bn(conv, bn)(x), seq(x), atol=1e-5)


def test_fold_bn_depthwise():
    conv, bn = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=False), nn.BatchNorm2d(6)
    seq = nn.Sequential(conv, bn)
    _randomize_bn(seq)
    seq.eval()
    x = torch.randn(2, 6, 8, 8)
    assert torch.allclose(fold_bn(conv, bn)(x), seq(x), atol=1e-5)


def _disabled(q: nn.Module) -> nn.Module:
    for layer in q.modules():
        if hasattr(layer, "wq"):
            layer.wq.enabled = False
    for a in quantizers(q):
        a.enabled = False
    return q


def test_deploy_surgery_with_quantizers_off_equals_fp_model():
    for arch, shape in (("resnet20", (1, 28, 28)), ("mobilenetv2", (3, 32, 32)), ("resnet18", (3, 32, 32))):
        m = create_model(arch, in_channels=shape[0], num_classes=10, mean=[0.4] * shape[0], std=[0.3] * shape[0])
        _randomize_bn(m)
        m.eval()
        q = _disabled(quantize_model(m, BitScheme.parse("w8a8"), "deploy"))
        x = torch.rand(2, *shape)
        assert torch.allclose(q(x), m(x), atol=1e-4, rtol=1e-4), arch
        assert not any(isinstance(mod, nn.BatchNorm2d) for mod in q.modules()), f"{arch}: BN left unfolded"


def test_deploy_profile_quantizes_every_conv_input_and_residual_add():
    m = create_model("resnet20", in_channels=1, num_classes=10).eval()
    q = quantize_model(m, BitScheme.parse("w4a4"), "deploy")
    g = q.graph
    for node in g.nodes:
        is_layer = node.op == "call_module" and hasattr(q.get_submodule(node.target), "wq")
        is_add = node.op == "call_function" and "add" in getattr(node.target, "__name__", "")
        if is_layer or is_add:
            for arg in [a for a in node.args if isinstance(a, torch.fx.Node)]:
                assert isinstance(q.get_submodule(arg.target), ActQuantizer) if arg.op == "call_module" else False, f"{node} input {arg} not quantized"
    bits = {a.bits for a in quantizers(q)}
    assert bits == {4, 8}  # 4-bit activations, 8-bit logits at the output
    assert q.zsq_meta["bn_folded"] == 21


def test_paper_profile_keeps_bn_and_quantizes_after_relu_only():
    m = create_model("resnet20", in_channels=1, num_classes=10).eval()
    q = quantize_model(m, BitScheme.parse("w4a4"), "paper")
    assert sum(isinstance(mod, nn.BatchNorm2d) for mod in q.modules()) == 21
    relus = sum(isinstance(mod, nn.ReLU) for mod in m.modules())
    assert len(quantizers(q)) == relus == 19
    assert all(a.mode == "ema" and not a.mask_grad for a in quantizers(q))
