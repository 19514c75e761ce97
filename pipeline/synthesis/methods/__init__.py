"""The seed methods as strategies, one module each; importing registers them.

``zeroq`` (floor: inversion + calibration), ``gdfq`` (conditional generator),
``hast`` (hard samples + feature alignment + FGSM copy), ``lrq`` (LKA generator,
angular margin, DKD), ``zaq`` (adversarial generator, relation maps) and
``fdda`` (per-class BN centres from 1 real image per class; not data-free).
"""

from pipeline.synthesis.methods import fdda, gdfq, hast, lrq, zaq, zeroq  # noqa: F401  (registration)
