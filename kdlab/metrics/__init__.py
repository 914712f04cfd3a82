"""Metrics computed from predictions: T. stddev, fidelity (agreement, KL, MI, entropy), accuracy, calibration
(ECE), class-agnostic CAM attention and IoU."""

from kdlab.metrics.attention import batch_iou, class_agnostic_cam, class_summed_map, iou, iou_counts, normalize_cam
from kdlab.metrics.calibration import ece_release, expected_calibration_error, reliability_bins, top_k_accuracy
from kdlab.metrics.fidelity import (
    agreement,
    fidelity_report,
    kl_divergence,
    knn_mutual_information,
    label_entropy,
    mean_entropy,
    mutual_information,
    release_batch_fidelity,
)
from kdlab.metrics.tstddev import t_stddev, t_stddev_chunks

__all__ = [
    "agreement",
    "batch_iou",
    "class_agnostic_cam",
    "class_summed_map",
    "ece_release",
    "expected_calibration_error",
    "fidelity_report",
    "iou",
    "iou_counts",
    "kl_divergence",
    "knn_mutual_information",
    "label_entropy",
    "mean_entropy",
    "mutual_information",
    "normalize_cam",
    "release_batch_fidelity",
    "reliability_bins",
    "t_stddev",
    "t_stddev_chunks",
    "top_k_accuracy",
]
