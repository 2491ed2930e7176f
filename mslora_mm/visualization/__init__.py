from .curves import plot_curves, read_curves
from .predictions import draw_predictions, predictions, summary
from .reweighting import (adapter_maps, choose_sites,
                          draw_reweighting_maps, site_statistics)
from .segmentation import colorize, draw_segmentation_panel, pixel_accuracy

__all__ = [
    'plot_curves', 'read_curves', 'draw_predictions', 'predictions',
    'summary', 'adapter_maps', 'choose_sites', 'draw_reweighting_maps',
    'site_statistics', 'colorize', 'draw_segmentation_panel',
    'pixel_accuracy'
]
