"""Bridges to other continual-learning libraries. Each is an optional dependency, imported only by its
own module (`clbench.interop.avalanche`: `pip install 'clbench[avalanche]'`)."""
