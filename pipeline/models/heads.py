"""Classification head on top of an encoder's pooled feature vector."""
from __future__ import annotations

from torch import nn


class ClassifierHead(nn.Sequential):
    """``(B, in_features) -> (B, out)`` logits.

    ``hidden > 0``: Dropout -> Linear(in, hidden) -> ReLU -> Dropout -> Linear(hidden, out);
    ``hidden == 0``: Dropout -> Linear(in, out) (a linear probe).
    """

    def __init__(self, in_features: int, hidden: int = 512, dropout: float = 0.5, out: int = 1):
        if hidden < 0 or not 0.0 <= dropout < 1.0:
            from pipeline.errors import ConfigError

            raise ConfigError(f"head: hidden must be >= 0 and 0 <= dropout < 1, got {hidden}, {dropout}")
        if hidden:
            layers = [nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                      nn.Dropout(dropout), nn.Linear(hidden, out)]
        else:
            layers = [nn.Dropout(dropout), nn.Linear(in_features, out)]
        super().__init__(*layers)
