"""`handmesh demo`: the live webcam / video / image demo (the same code as `python demo/webcam.py`)."""

from handmesh.demo.app import add_arguments, run

__all__ = ["add_arguments", "run"]
