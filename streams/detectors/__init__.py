"""The detectors: a pure event-time minute clock, one module per detector behind one interface, and the composer
the worker drives (:class:`Detectors`)."""

from costplane.streams.detectors.base import MINUTE_MS, Context, Detector
from costplane.streams.detectors.composer import Detectors
from costplane.streams.detectors.config import DetectorConfig

__all__ = ["MINUTE_MS", "Context", "Detector", "DetectorConfig", "Detectors"]
