"""SyncNet v2 lip-sync scoring: syncnet_python's AV offset / LSE-D / LSE-C and the Lip Forcing
sync-C training reward, batched in torch, plus a distance-vs-offset chart and a JSON report."""

from .metrics import (
    SyncResult,
    evaluate_sync,
    mean_distances,
    offset_search,
    shift_distances,
    sync_c_reward,
    sync_confidence,
)
from .model import SyncNetV2, load_syncnet
from .plot import plot_offsets, save_report

__all__ = [
    "SyncNetV2",
    "SyncResult",
    "evaluate_sync",
    "load_syncnet",
    "mean_distances",
    "offset_search",
    "plot_offsets",
    "save_report",
    "shift_distances",
    "sync_c_reward",
    "sync_confidence",
]
