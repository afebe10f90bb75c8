"""The network: FastViT encoder (encoder.py), MANO parameter regressor (regressor.py), the whole model
(hand_model.py)."""
