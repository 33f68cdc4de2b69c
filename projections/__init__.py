"""Projections: pure folds of the event log into per-store state tables."""
