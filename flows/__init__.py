"""Prefect flows (thin wiring over echo_batch)."""
