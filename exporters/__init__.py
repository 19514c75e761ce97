"""From the QAT model to integer artifacts, one package per format; each proves its artifact is integer."""
