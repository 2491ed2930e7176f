"""Predictions drawn on their image: boxes, masks, class names and scores
(mmdet's ``DetLocalVisualizer``), the segmentation's classes over the image
(mmseg's ``SegLocalVisualizer``) or top-k labels (mmpretrain's
``UniversalVisualizer``)."""
import numpy as np


def draw_predictions(image: np.ndarray, sample, meta: dict,
                     score_thr: float = 0.3, topk: int = 3) -> np.ndarray:
    """``image`` (RGB) with ``sample``'s predictions drawn on it."""
    if 'pred_instances' in sample:
        from mmdet.visualization import DetLocalVisualizer
        visualizer = DetLocalVisualizer()
        visualizer.dataset_meta = meta
        visualizer.add_datasample('pred', image, sample, draw_gt=False,
                                  pred_score_thr=score_thr)
        return visualizer.get_image()
    if 'pred_sem_seg' in sample:
        from mmseg.visualization import SegLocalVisualizer
        visualizer = SegLocalVisualizer(alpha=0.6)
        visualizer.dataset_meta = meta
        visualizer.add_datasample('pred', image, sample, draw_gt=False,
                                  with_labels=True)
        return visualizer.get_image()
    from mmpretrain.visualization import UniversalVisualizer
    scores = sample.pred_score
    top = scores.topk(min(topk, len(scores)))
    classes = meta.get('classes')
    text = '\n'.join(
        f'{classes[i] if classes else i}: {s:.2f}'
        for s, i in zip(top.values.tolist(), top.indices.tolist()))
    visualizer = UniversalVisualizer()
    visualizer.set_image(image)
    visualizer.draw_texts(text, np.array([5, 5]), colors='white',
                          font_sizes=max(10, image.shape[0] // 25),
                          vertical_alignments='top',
                          bboxes=dict(facecolor='black', alpha=0.7,
                                      edgecolor='none'))
    return visualizer.get_image()


def predictions(sample, score_thr: float) -> dict:
    """What was drawn, in image pixels: boxes ``[x1, y1, x2, y2]``, labels,
    scores; the pixels of each predicted class; or the class scores."""
    if 'pred_instances' in sample:
        kept = sample.pred_instances[
            sample.pred_instances.scores >= score_thr]
        return dict(bboxes=kept.bboxes.tolist(), labels=kept.labels.tolist(),
                    scores=kept.scores.tolist())
    if 'pred_sem_seg' in sample:
        labels, counts = sample.pred_sem_seg.data.unique(return_counts=True)
        return dict(pixels={int(k): int(n) for k, n in zip(labels, counts)})
    return dict(scores=sample.pred_score.tolist())


def summary(sample, score_thr: float) -> str:
    if 'pred_instances' in sample:
        n = int((sample.pred_instances.scores >= score_thr).sum())
        return f'{n} detections (score >= {score_thr})'
    if 'pred_sem_seg' in sample:
        labels = sample.pred_sem_seg.data
        values, counts = labels.unique(return_counts=True)
        top = values[counts.argmax()]
        return f'{len(values)} classes, most pixels class {int(top)} ' \
            f'({float(counts.max()) / labels.numel():.0%})'
    return f'top-1 class {int(sample.pred_score.argmax())} ' \
        f'({float(sample.pred_score.max()):.2f})'
