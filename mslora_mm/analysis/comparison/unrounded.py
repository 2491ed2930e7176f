"""Evaluators that return what they compute, unrounded: mmdet's
``CocoMetric`` rounds COCOeval's statistics to 0.001 and mmseg's
``IoUMetric`` its means to 0.01 (points); a comparison chooses and reports
on the unrounded values and rounds only what it prints."""
import sys
from typing import Dict, List, Tuple

#: CocoMetric's metric items and their index in COCOeval's ``stats``
COCO_STATS = {'mAP': 0, 'mAP_50': 1, 'mAP_75': 2, 'mAP_s': 3, 'mAP_m': 4,
              'mAP_l': 5, 'AR@100': 6, 'AR@300': 7, 'AR@1000': 8,
              'AR_s@1000': 9, 'AR_m@1000': 10, 'AR_l@1000': 11}
#: evaluator type (without scope) -> its unrounded subclass's scoped name
UNROUNDED = {'CocoMetric': 'mmdet.UnroundedCocoMetric',
             'IoUMetric': 'mmseg.UnroundedIoUMetric'}


def _register_coco() -> None:
    from mmdet.evaluation.metrics import CocoMetric
    from mmdet.registry import METRICS
    if 'UnroundedCocoMetric' in METRICS.module_dict:
        return

    @METRICS.register_module()
    class UnroundedCocoMetric(CocoMetric):
        """``CocoMetric`` whose ``<iou type>_<item>`` (and proposal
        ``AR@N``) values are COCOeval's statistics, not rounded."""

        def compute_metrics(self, results: list) -> Dict[str, float]:
            module = sys.modules[CocoMetric.__module__]
            captured: List[Tuple[str, bool, list]] = []
            originals = {}
            for name in ('COCOeval', 'COCOevalMP'):
                base = getattr(module, name, None)
                if base is None:
                    continue

                class Capturing(base):
                    def summarize(self) -> None:
                        super().summarize()
                        captured.append((self.params.iouType,
                                         bool(self.params.useCats),
                                         [float(s) for s in self.stats]))

                originals[name] = base
                setattr(module, name, Capturing)
            try:
                metrics = super().compute_metrics(results)
            finally:
                for name, base in originals.items():
                    setattr(module, name, base)
            for iou_type, use_cats, stats in captured:
                for item, index in COCO_STATS.items():
                    key = f'{iou_type}_{item}' if use_cats else item
                    if key in metrics:
                        metrics[key] = stats[index]
            return metrics


def _register_iou() -> None:
    import numpy as np
    from mmseg.evaluation import IoUMetric
    from mmseg.registry import METRICS
    if 'UnroundedIoUMetric' in METRICS.module_dict:
        return

    @METRICS.register_module()
    class UnroundedIoUMetric(IoUMetric):
        """``IoUMetric`` whose ``aAcc`` and ``m<metric>`` (in points) are
        the means of its per-class arrays, not rounded."""

        def compute_metrics(self, results: list) -> Dict[str, float]:
            metrics = super().compute_metrics(results)
            if not metrics:  # format_only
                return metrics
            areas = [sum(parts) for parts in zip(*results)]
            ret = self.total_area_to_metrics(*areas, self.metrics,
                                             self.nan_to_num, self.beta)
            for key, value in ret.items():
                name = key if key == 'aAcc' else 'm' + key
                if name in metrics:
                    metrics[name] = float(np.nanmean(value) * 100)
            return metrics


def unrounded_evaluators(cfg) -> None:
    """Point ``cfg``'s val and test evaluators of type ``CocoMetric`` /
    ``IoUMetric`` (scoped or not) at their unrounded subclasses, in
    place."""
    for key in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(key)
        items = evaluator if isinstance(evaluator, (list, tuple)) \
            else [evaluator]
        for item in items:
            if not isinstance(item, dict):
                continue
            kind = str(item.get('type', '')).rpartition('.')[2]
            if kind == 'CocoMetric':
                _register_coco()
            elif kind == 'IoUMetric':
                _register_iou()
            else:
                continue
            item['type'] = UNROUNDED[kind]
