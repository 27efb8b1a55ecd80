"""Kalman-type inversion algorithms, one per module, each an ``init``/``step`` pair."""

from ekibnn.inversion.eki import EKIInfo, EKIState, KalmanAlgorithm, eki

__all__ = ["EKIInfo", "EKIState", "KalmanAlgorithm", "eki"]
