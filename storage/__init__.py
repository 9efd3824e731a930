"""Depth stores and ground-truth sidecars on Zarr v3 (local paths or fsspec URLs); no Prefect."""
