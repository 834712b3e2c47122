"""Experiment trackers: optional mirrors of the run directory (TensorBoard, MLflow, Weights & Biases).

One module per tracker, registered by name in ``TRACKERS``; ``--log tensorboard,mlflow,wandb`` picks them. The
engine's ``RunLogger`` opens them on the main process and feeds them through ``Trackers`` (``fanout.py``).
"""

from distillers.registry import import_submodules
from distillers.tracking.base import TRACKERS, Tracker, TrackerContext
from distillers.tracking.fanout import TRACKERS_FILE, Trackers, open_trackers, parse_names

import_submodules(__name__, __path__)

__all__ = ["TRACKERS", "TRACKERS_FILE", "Tracker", "TrackerContext", "Trackers", "open_trackers", "parse_names"]
