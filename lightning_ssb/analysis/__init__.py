"""docs/method.md sections 2-7 as plain functions over tensors: no Lightning, no wandb, no file I/O.

Shapes: N examples, D = H*d nodes of a site (H heads of d nodes), K labels, U units.
Ties: argmax picks the lowest label index among tied fields, everywhere (envelopes included).
"""

from .crossover import CROSSOVER_COLUMNS, crossover, default_sizes
from .envelope import Envelope, node_accuracies, node_predictions, upper_envelope
from .families import FAMILIES, HeadMaps, NodeLines, own_units, shared_units
from .fit import FitSettings, fit_groups, fit_node_lines
from .hull import hull_bound, node_hull_labels, reachable_labels
from .order import UnitMatch, jaccard_matrix, match_units, order_parameters
from .readout import Readout, fit_readout
from .silencing import head_accuracies, head_predictions, subset_accuracy, subset_predictions
from .site import AnalysisConfig, SiteAnalysis, SiteResults, analyze_all, analyze_site
from .units import (ClusterStats, LabelStats, UnitReport, benjamini_hochberg, binomial_pvalues, class_means,
                    cluster_stats, confusion_matrices, head_field_matrices, label_stats, learned_labels,
                    node_field_matrices, unit_report)

__all__ = [
    "AnalysisConfig", "CROSSOVER_COLUMNS", "ClusterStats", "Envelope", "FAMILIES", "FitSettings", "HeadMaps",
    "LabelStats", "NodeLines", "Readout", "SiteAnalysis", "SiteResults", "UnitMatch", "UnitReport", "analyze_all",
    "analyze_site", "benjamini_hochberg", "binomial_pvalues", "class_means", "cluster_stats", "confusion_matrices",
    "crossover", "default_sizes", "fit_groups", "fit_node_lines", "fit_readout", "head_accuracies",
    "head_field_matrices", "head_predictions", "hull_bound", "jaccard_matrix", "label_stats", "learned_labels",
    "match_units", "node_accuracies", "node_field_matrices", "node_hull_labels", "node_predictions",
    "order_parameters", "own_units", "reachable_labels", "shared_units", "subset_accuracy", "subset_predictions",
    "unit_report", "upper_envelope",
]
