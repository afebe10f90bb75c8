"""Subcommands of the `handmesh` CLI, one module each."""
