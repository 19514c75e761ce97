"""Quantizer arithmetic against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from pipeline.quant.deploy import act_grid
from pipeline.quant.quantizers import ActQuantizer, WeightQuantizer, fake_quant
from pipeline.quant.scheme import BitScheme
from pipeline.errors import ConfigError


def test_fake_quant_hand_values():
    # scale 0.5, zero-point 2, grid [0, 7] covers [-1.0, 2.5]
    x = torch.tensor([-3.0, -1.0, -0.26, 0.0, 0.24, 0.76, 2.5, 9.0])
    y = fake_quant(x, torch.tensor(0.5), torch.tensor(2.0), 0, 7)
    assert y.tolist() == [-1.0, -1.0, -0.5, 0.0, 0.0, 1.0, 2.5, 2.5]


def test_ste_gradient_masked_outside_range():
    x = torch.tensor([-3.0, 0.3, 9.0], requires_grad=True)
    fake_quant(x, torch.tensor(0.5), torch.tensor(2.0), 0, 7).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0]
    x.grad = None
    fake_quant(x, torch.tensor(0.5), torch.tensor(2.0), 0, 7, mask_grad=False).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]  # GDFQ's plain STE


def test_weight_quantizer_symmetric_narrow_range_per_channel():
    w = torch.tensor([[1.27, -0.5, 0.004], [-0.127, 0.0204, 0.0]]).view(2, 3, 1, 1)
    q = WeightQuantizer(2, bits=8)
    q.init_scale(w, "minmax")
    assert torch.allclose(q.scale, torch.tensor([0.01, 0.001]))
    y = q(w).view(2, 3)
    # per-channel grid: channel 0 in steps of 0.01, channel 1 in steps of 0.001, range ±127 steps
    assert torch.allclose(y[0], torch.tensor([1.27, -0.50, 0.0]), atol=1e-6)
    assert torch.allclose(y[1], torch.tensor([-0.127, 0.020, 0.0]), atol=1e-6)


def test_weight_quantizer_4bit_grid():
    w = torch.tensor([0.7, -0.7, 0.33, 0.06]).view(1, 4, 1, 1)
    q = WeightQuantizer(1, bits=4)
    q.init_scale(w, "minmax")  # qmax 7 → scale 0.1
    assert q(w).flatten().tolist() == pytest.approx([0.7, -0.7, 0.3, 0.1])


def test_act_quantizer_qparams_and_a8_deployment_of_a4():
    q = ActQuantizer(bits=4)
    with torch.no_grad():
        q.lo.fill_(-1.0)
        q.hi.fill_(2.0)
    q.initialized.fill_(True)
    s, zp = q.qparams()
    assert s.item() == pytest.approx(0.2) and zp.item() == 5.0  # 15 levels over 3.0, zero at level 5
    # deployed at 8 bits inside the same clipping range [-1.0, 2.0]
    grid = act_grid(q)  # the deployed grid (A<8 → A8)
    s8, zp8 = q.qparams(8)
    assert grid.scale == pytest.approx(float(s8.detach())) and grid.zero_point == int(zp8) and grid.trained_bits == 4
    s8, zp8, bits = grid.scale, grid.zero_point, grid.bits
    assert bits == 8 and s8 == pytest.approx(3.0 / 255) and zp8 == 85
    x = torch.tensor([-5.0, -1.0, 0.0, 0.31, 2.0, 7.0])
    assert q(x).tolist() == pytest.approx([-1.0, -1.0, 0.0, 0.4, 2.0, 2.0])


def test_act_quantizer_range_always_contains_zero():
    q = ActQuantizer(bits=8)
    q.observing = True
    q(torch.linspace(0.5, 3.0, 1000))
    q.observing = False
    q.init_range("minmax")
    s, zp = q.qparams()
    assert float(zp) == 0 and float(s) == pytest.approx(3.0 / 255)
    assert float(q(torch.tensor([0.0]))) == 0.0


def test_bit_scheme_parsing():
    s = BitScheme.parse("W4A4", first_last_bits=8)
    assert (s.w_bits, s.a_bits, s.name, s.deployed_name) == (4, 4, "w4a4", "w4a8")
    assert s.weight_bits(is_first=True, is_last=False) == 8 and s.weight_bits(False, False) == 4
    assert BitScheme.parse("w8a8").deployed_name == "w8a8"
    with pytest.raises(ConfigError):
        BitScheme.parse("int8")
    with pytest.raises(ConfigError):
        BitScheme.parse("w1a8")
