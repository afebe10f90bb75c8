"""handmesh: 3D hand mesh reconstruction from a single RGB image (FastViT encoder -> MANO regressor -> MANO layer)."""

__version__ = "0.1.0"
