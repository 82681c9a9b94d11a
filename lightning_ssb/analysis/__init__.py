"""docs/method.md sections 2-7 as plain functions over tensors: no Lightning, no wandb, no file I/O.

Shapes: N examples, D = H*d nodes of a site (H heads of d nodes), K labels, U units.
Ties: argmax picks the lowest label index among tied fields, everywhere (envelopes included).
"""

from .crossover import CROSSOVER_COLUMNS, CrossoverResult, crossover, default_sizes
from .envelope import Envelope, node_accuracies, node_predictions, upper_envelope
from .families import FAMILIES, HeadMaps, NodeLines, own_units, shared_units
from .fit import FitSettings, GroupFit, NodeFit, fit_groups, fit_node_lines
from .hull import hull_bound, node_hull_labels, reachable_labels
from .optim import FitReport
from .order import UnitMatch, jaccard_matrix, match_units, order_parameters
from .penalty import Penalties
from .readout import Readout, fit_readout
from .sampling import seeded_rows
from .silencing import head_accuracies, head_predictions, subset_accuracy, subset_predictions
from .site import (
    AnalysisConfig,
    SiteAnalysis,
    SiteResults,
    analyze_all,
    analyze_site,
    choose_penalties,
    null_labels,
    sensitivity,
)
from .units import (
    ClusterStats,
    LabelStats,
    UnitReport,
    benjamini_hochberg,
    binomial_pvalues,
    centre_fields,
    class_means,
    cluster_stats,
    confusion_matrices,
    head_field_matrices,
    label_stats,
    learned_labels,
    node_field_matrices,
    unit_report,
)

__all__ = [
    "AnalysisConfig", "CROSSOVER_COLUMNS", "ClusterStats", "CrossoverResult", "Envelope", "FAMILIES", "FitReport",
    "FitSettings", "GroupFit", "HeadMaps", "LabelStats", "NodeFit", "NodeLines", "Penalties", "Readout",
    "SiteAnalysis", "SiteResults", "UnitMatch", "UnitReport", "analyze_all", "analyze_site", "benjamini_hochberg",
    "binomial_pvalues", "centre_fields", "choose_penalties", "class_means", "cluster_stats", "confusion_matrices",
    "crossover", "default_sizes", "fit_groups", "fit_node_lines", "fit_readout", "head_accuracies",
    "head_field_matrices", "head_predictions", "hull_bound", "jaccard_matrix", "label_stats", "learned_labels",
    "match_units", "node_accuracies", "node_field_matrices", "node_hull_labels", "node_predictions", "null_labels",
    "order_parameters", "own_units", "reachable_labels", "seeded_rows", "sensitivity", "shared_units",
    "subset_accuracy", "subset_predictions", "unit_report", "upper_envelope",
]
