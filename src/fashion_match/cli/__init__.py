"""Thin command-line layer: one module per `fm-*` command."""
