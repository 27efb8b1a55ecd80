"""Kalman-type inversion algorithms, one per module, each an ``init``/``step`` pair."""

from ekibnn.inversion.eki import EKIInfo, EKIState, KalmanAlgorithm, eki
from ekibnn.inversion.etki import etki
from ekibnn.inversion.uki import UKIInfo, UKIState, uki

__all__ = ["EKIInfo", "EKIState", "KalmanAlgorithm", "UKIInfo", "UKIState", "eki", "etki", "uki"]
