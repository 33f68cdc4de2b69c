"""Adapters: one package per outside system, each implementing ports from engine.ports."""
