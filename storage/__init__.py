"""Depth stores and ground-truth sidecars on Zarr v3 (local paths or fsspec URLs); no Prefect."""

import warnings

# Stores are consolidated so a plain `xr.open_zarr(uri)` works; zarr warns on every open that consolidated
# metadata is not yet in the v3 spec. It is a known, accepted trade-off, not something a user can act on.
warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part", category=UserWarning)
