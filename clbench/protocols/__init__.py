"""Protocols: arrays + parameters -> a deterministic stream of experiences. No file I/O here."""

from clbench.protocols.class_incremental import split_by_class
from clbench.protocols.class_order import resolve_class_order
from clbench.protocols.stream import Experience, Stream

__all__ = ["Experience", "Stream", "resolve_class_order", "split_by_class"]
