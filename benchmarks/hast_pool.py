"""Benchmark: which issue-18 change moved HAST at W4A4 (seed 0, ``fast`` budget, first 2,000 real test images).

Not a test. One HAST pool per image-optimiser setting, then the QAT variants on it, so the pool and the QAT changes are
told apart (n=1 each: a diagnostic, not a ranking; the multi-seed figures are benchmarks.methods'):

    python -m benchmarks.hast_pool [w4a4]
"""
import json
import sys
import time

import torch

from benchmarks.methods import accuracy, load_teacher
from benchmarks.fashion_mnist import load_split
from pipeline.config import build_config
from pipeline.quant.prepare import QuantProfile, quantize_model
from pipeline.quant.scheme import BitScheme
from pipeline.synthesis import QATJob, create_method

def main() -> None:
    torch.set_num_threads(2)
    teacher, card = load_teacher(None)
    xt, yt = load_split("test"); xt = torch.from_numpy(xt[:2000]); yt = yt[:2000]
    bits = sys.argv[1] if len(sys.argv) > 1 else "w4a4"
    out = {}
    def go(tag, pool_opts, qat_opts, pools={}):
        cfg = build_config("fast", cli={"synthesis.method": "hast"})
        opts = {**cfg.synthesis.options, **pool_opts}
        key = json.dumps(pool_opts, sort_keys=True)
        if key not in pools:
            torch.manual_seed(0)
            pools[key] = create_method("hast", opts).synthesize(teacher, card, cfg.synthesis.num_images, 0)
        strategy = create_method("hast", {**opts, **qat_opts})
        torch.manual_seed(0)
        student = quantize_model(teacher, BitScheme.parse(bits, None), QuantProfile.named("deploy"))
        job = QATJob(student, teacher, card, pools[key], cfg.qat.settings(), seed=0, calib_images=cfg.qat.calib_images)
        strategy.calibrate(job)
        t = time.time(); strategy.train(job)
        out[tag] = accuracy(student, xt, yt)
        print(tag, out[tag], f"{time.time() - t:.0f}s", flush=True)
    HAST_BETAS, PIPELINE_BETAS = {"betas": [0.9, 0.999]}, {"betas": [0.5, 0.9]}  # explicit: the default may change
    go("HAST's betas, QAT as HAST's code", HAST_BETAS, {})
    go("HAST's betas, no crops", HAST_BETAS, {"qat_rrc_p": 0.0})
    go("HAST's betas, crops p=0.5", HAST_BETAS, {"qat_rrc_p": 0.5})
    go("HAST's betas, no FGSM", HAST_BETAS, {"fgsm_eps": 0.0})
    go("pipeline's betas, QAT as HAST's code", PIPELINE_BETAS, {})
    go("pipeline's betas, crops p=0.5", PIPELINE_BETAS, {"qat_rrc_p": 0.5})


if __name__ == "__main__":
    main()
