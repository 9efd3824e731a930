"""Mamba (SSM) residual smoother: plain PyTorch, importable without Prefect or mamba-ssm."""
