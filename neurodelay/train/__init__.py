"""Training: the DCLS delay model, its fast kernels, presets and the trainer."""
