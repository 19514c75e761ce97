"""Training on the host: where it runs (placement, ranks) and the one QAT loop (engine)."""
