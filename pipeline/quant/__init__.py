"""QAT core: bit schemes, fake quantizers, model surgery (deploy/paper profiles), calibration and training."""
