"""Thin Prefect task wrappers over the domain code (caching, retries, concurrency)."""
