"""A procedurally drawn COCO-format instance-segmentation dataset.

Every image holds a few non-overlapping filled shapes (circle, square,
triangle) on a noisy background; each mask is the exact polygon that was
drawn. Deterministic from ``seed``; needs nothing but numpy and OpenCV.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle')


def _polygon(kind: str, cx: float, cy: float, r: float,
             angle: float) -> np.ndarray:
    """Vertices ``(K, 2)`` of a shape of circumradius ``r``."""
    sides = {'circle': 32, 'square': 4, 'triangle': 3}[kind]
    t = angle + np.arange(sides) * 2 * np.pi / sides
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _draw_image(rng: np.random.Generator, size: int,
                max_shapes: int) -> Tuple[np.ndarray, List[Dict]]:
    img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (5, 5), 0)
    placed: List[Tuple[float, float, float]] = []
    objects = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _try in range(20):
            r = float(rng.uniform(0.08, 0.22) * size)
            cx, cy = rng.uniform(r + 2, size - r - 2, 2)
            if all(np.hypot(cx - x, cy - y) > r + s + 2
                   for x, y, s in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        label = int(rng.integers(len(CLASSES)))
        poly = _polygon(CLASSES[label], cx, cy, r,
                        float(rng.uniform(0, 2 * np.pi)))
        color = tuple(int(c) for c in rng.integers(90, 256, 3))
        cv2.fillPoly(img, [np.round(poly).astype(np.int32)], color)
        objects.append(dict(label=label, polygon=np.round(poly, 1)))
    return img, objects


def generate_shapes_dataset(root: str, num_train: int = 64,
                            num_val: int = 16, size: int = 128,
                            max_shapes: int = 4, seed: int = 0) -> str:
    """Write ``root/images/{train,val}/*.png`` and
    ``root/annotations/instances_{train,val}.json``; returns ``root``."""
    rng = np.random.default_rng(seed)
    categories = [dict(id=i + 1, name=n, supercategory='shape')
                  for i, n in enumerate(CLASSES)]
    for split, count in (('train', num_train), ('val', num_val)):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            img, objects = _draw_image(rng, size, max_shapes)
            name = f'{split}_{i:05d}.png'
            cv2.imwrite(osp.join(root, 'images', split, name), img)
            images.append(dict(id=i + 1, file_name=name, width=size,
                               height=size))
            for obj in objects:
                poly = obj['polygon']
                x0, y0 = poly.min(0)
                x1, y1 = poly.max(0)
                x = poly[:, 0]
                y = poly[:, 1]
                area = 0.5 * abs(np.dot(x, np.roll(y, 1)) -
                                 np.dot(y, np.roll(x, 1)))
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=i + 1,
                    category_id=obj['label'] + 1,
                    segmentation=[poly.flatten().tolist()],
                    area=float(area), iscrowd=0,
                    bbox=[float(x0), float(y0), float(x1 - x0),
                          float(y1 - y0)]))
        os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
        with open(osp.join(root, 'annotations',
                           f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations,
                           categories=categories), f)
    return root
