"""Joint training: the upper bound."""

from __future__ import annotations

from clbench.learners.finetune import Finetune


class Joint(Finetune):
    """Joint training: fine-tuning where each experience trains on the union of all data seen so
    far (the runner feeds it cumulatively), so nothing is forgotten; cost grows with the stream."""

    name = "joint"
    online = False
    cumulative = True
