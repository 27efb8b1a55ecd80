"""The Kalman family: one shared ensemble kernel (:mod:`ekibnn.inversion.kernel`) and one
algorithm per module (:mod:`~ekibnn.inversion.eki`, :mod:`~ekibnn.inversion.etki`,
:mod:`~ekibnn.inversion.eks` with ALDI, :mod:`~ekibnn.inversion.uki`)."""

from ekibnn.inversion.eki import EKI, eki
from ekibnn.inversion.eks import ALDI, EKS, EKSInfo, aldi, eks
from ekibnn.inversion.etki import ETKI, etki
from ekibnn.inversion.kernel import (
    EnsembleInfo,
    EnsembleKalman,
    EnsembleState,
    Forecast,
    KalmanAlgorithm,
)
from ekibnn.inversion.uki import UKI, UKIInfo, UKIState, uki

__all__ = [
    "ALDI",
    "EKI",
    "EKS",
    "ETKI",
    "UKI",
    "EKSInfo",
    "EnsembleInfo",
    "EnsembleKalman",
    "EnsembleState",
    "Forecast",
    "KalmanAlgorithm",
    "UKIInfo",
    "UKIState",
    "aldi",
    "eki",
    "eks",
    "etki",
    "uki",
]
