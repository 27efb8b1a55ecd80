"""The Kalman family: one shared ensemble kernel (:mod:`ekibnn.inversion.kernel`) and one
algorithm per module (:mod:`~ekibnn.inversion.eki`, :mod:`~ekibnn.inversion.etki`,
:mod:`~ekibnn.inversion.eks` with ALDI, :mod:`~ekibnn.inversion.uki`), and the members that
linearise with the model's own Jacobian: Gauss–Newton / Levenberg–Marquardt to the MAP with
its linearised-Laplace posterior (:mod:`~ekibnn.inversion.gauss_newton`), randomized maximum
likelihood (:mod:`~ekibnn.inversion.rml`) and the Laplace evidence for unknown noise and prior
scale (:mod:`~ekibnn.inversion.evidence`)."""

from ekibnn.inversion.eki import EKI, eki
from ekibnn.inversion.eks import ALDI, EKS, EKSInfo, aldi, eks
from ekibnn.inversion.etki import ETKI, etki
from ekibnn.inversion.evidence import Evidence, EvidenceInfo, EvidenceState, Fitted, evidence
from ekibnn.inversion.gauss_newton import (
    Categorical,
    Gaussian,
    GaussNewton,
    GaussNewtonInfo,
    GaussNewtonState,
    Likelihood,
    gauss_newton,
    laplace,
)
from ekibnn.inversion.kernel import (
    EnsembleInfo,
    EnsembleKalman,
    EnsembleState,
    Forecast,
    KalmanAlgorithm,
)
from ekibnn.inversion.rml import RML, FidelityCheck, RMLState, rml, self_check
from ekibnn.inversion.uki import UKI, UKIInfo, UKIState, uki

__all__ = [
    "ALDI",
    "EKI",
    "EKS",
    "ETKI",
    "RML",
    "UKI",
    "Categorical",
    "EKSInfo",
    "EnsembleInfo",
    "EnsembleKalman",
    "EnsembleState",
    "Evidence",
    "EvidenceInfo",
    "EvidenceState",
    "FidelityCheck",
    "Fitted",
    "Forecast",
    "GaussNewton",
    "GaussNewtonInfo",
    "GaussNewtonState",
    "Gaussian",
    "KalmanAlgorithm",
    "Likelihood",
    "RMLState",
    "UKIInfo",
    "UKIState",
    "aldi",
    "eki",
    "eks",
    "etki",
    "evidence",
    "gauss_newton",
    "laplace",
    "rml",
    "self_check",
    "uki",
]
