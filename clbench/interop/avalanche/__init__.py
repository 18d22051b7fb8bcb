"""Avalanche (avalanche-lib 0.6) and clbench, both ways.

- Avalanche -> clbench: `strategy_learner("Naive")` (what `--learner avalanche:Naive` resolves to) is an
  Avalanche strategy as a clbench learner; `scenario_from_benchmark(benchmark)` is an Avalanche
  new-classes benchmark as a clbench scenario.
- clbench -> Avalanche: `LearnerStrategy(learner)` trains and evaluates any clbench learner in Avalanche's
  loop, with Avalanche's plugins and evaluation; `avalanche_context(benchmark)` builds its context.
- `avalanche_forgetting(A)`: forgetting as Avalanche defines it (first minus last), beside clbench's.

avalanche-lib is imported here and nowhere else in clbench; without it, importing this module is one
line naming the extra to install.
"""

from __future__ import annotations

import warnings
from importlib import metadata

from clbench.errors import ClbenchError
from clbench.guard import one_line


def import_failure(exc: Exception) -> ClbenchError:
    """The one-line error for avalanche-lib failing to import. A torchvision built for another torch than
    the installed one fails as it loads its operators ("operator torchvision::nms does not exist", or an
    undefined symbol): that is named, with the fix (the matching torch/torchvision pair); a missing package
    names the extra to install."""
    import torch

    if "torchvision" in str(exc) and not isinstance(exc, ModuleNotFoundError):
        try:
            torchvision = f"torchvision {metadata.version('torchvision')}"
        except metadata.PackageNotFoundError:
            torchvision = "torchvision"
        release = torch.__version__.split("+")[0]
        return ClbenchError(f"the Avalanche bridge imports torchvision, and {torchvision} was built for another torch "
                            f"than this torch {torch.__version__} ({one_line(exc)}); install the matching pair from one "
                            f"package index: pip install torch=={release} torchvision (torchvision pins the torch it was "
                            "built for)")
    return ClbenchError(f"the Avalanche bridge needs avalanche-lib, which cannot be imported ({one_line(exc)}); "
                        "install it with: pip install 'clbench[avalanche]'")


try:
    with warnings.catch_warnings():  # avalanche warns on import about optional solvers it may never use
        warnings.simplefilter("ignore")
        import avalanche.training  # noqa: F401
except (ImportError, RuntimeError, OSError) as exc:  # torchvision's operator registration raises RuntimeError
    raise import_failure(exc) from None

from clbench.interop.avalanche.learner import AvalancheLearner, strategy_learner, supported_strategies  # noqa: E402
from clbench.interop.avalanche.metrics import avalanche_forgetting  # noqa: E402
from clbench.interop.avalanche.scenario import scenario_from_benchmark  # noqa: E402
from clbench.interop.avalanche.strategy import LearnerStrategy, avalanche_context  # noqa: E402

__all__ = ["AvalancheLearner", "LearnerStrategy", "avalanche_context", "avalanche_forgetting",
           "scenario_from_benchmark", "strategy_learner", "supported_strategies"]
