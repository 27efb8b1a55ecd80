"""Kalman-type inversion algorithms, one per module, each an ``init``/``step`` pair."""

from ekibnn.inversion.eki import EKIInfo, EKIState, EpochState, KalmanAlgorithm, eki
from ekibnn.inversion.eks import EKSInfo, EKSState, aldi, eks, eks_stable_dt
from ekibnn.inversion.etki import etki
from ekibnn.inversion.uki import UKIInfo, UKIState, uki

__all__ = [
    "EKIInfo",
    "EKIState",
    "EKSInfo",
    "EKSState",
    "EpochState",
    "KalmanAlgorithm",
    "UKIInfo",
    "UKIState",
    "aldi",
    "eki",
    "eks",
    "eks_stable_dt",
    "etki",
    "uki",
]
