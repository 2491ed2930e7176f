"""Datasets: the generated demo data and checks on bad annotations."""
import copy
import logging
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.logging import MMLogger
from pycocotools.coco import COCO
from pycocotools import mask as mask_utils

from helpers import build_detector
from mmdet.registry import DATASETS
from mslora_mm.datasets import generate_shapes_dataset

PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='PackDetInputs')
]


def test_shapes_dataset_is_deterministic_and_exact(tmp_path):
    a = generate_shapes_dataset(str(tmp_path / 'a'), 4, 2, size=96, seed=3)
    b = generate_shapes_dataset(str(tmp_path / 'b'), 4, 2, size=96, seed=3)
    ann = 'annotations/instances_train.json'
    assert open(osp.join(a, ann)).read() == open(osp.join(b, ann)).read()
    coco = COCO(osp.join(a, ann))
    assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) >= 4
    for ann_id in coco.getAnnIds():
        info = coco.loadAnns(ann_id)[0]
        mask = coco.annToMask(info)
        # the polygon mask matches its area and box (drawn exactly)
        assert abs(mask.sum() - info['area']) / info['area'] < 0.15
        x, y, w, h = mask_utils.toBbox(mask_utils.encode(
            np.asfortranarray(mask)))
        assert abs(w - info['bbox'][2]) <= 2 and abs(h - info['bbox'][3]) <= 2


def bad_dataset(tmp_path, minicoco, missing_image=False):
    with open(osp.join(minicoco, 'annotations/instances_train.json')) as f:
        data = json.load(f)
    data = copy.deepcopy(data)
    img_id = data['images'][0]['id']
    anns = [a for a in data['annotations']
            if a['image_id'] == img_id and not a['iscrowd']]
    anns[0]['segmentation'] = [[]]  # empty polygon
    anns[1]['bbox'] = [10.0, 10.0, 0.0, 0.0]  # zero-area box
    anns[1]['area'] = 0.0
    if missing_image:
        data['images'][1]['file_name'] = 'does_not_exist.jpg'
    path = tmp_path / 'bad.json'
    path.write_text(json.dumps(data))
    return DATASETS.build(dict(
        type='CheckedCocoDataset', data_root=minicoco, ann_file=str(path),
        data_prefix=dict(img='images/'), pipeline=PIPELINE,
        metainfo=dict(classes=('person', 'car', 'airplane')))), anns


def test_missing_image_is_a_clear_error(tmp_path, minicoco):
    with pytest.raises(FileNotFoundError,
                       match='does_not_exist.jpg.*data_prefix'):
        bad_dataset(tmp_path, minicoco, missing_image=True)


def test_bad_annotations_are_logged_and_training_works(tmp_path, minicoco):
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        dataset, anns = bad_dataset(tmp_path, minicoco)
    finally:
        logger.removeHandler(handler)
    out = '\n'.join(records)
    assert f'zero-area box (dropped): ids [{anns[1]["id"]}]' in out
    assert f'empty polygon (ignored): ids [{anns[0]["id"]}]' in out
    sample = dataset[0]
    n_valid = sum(1 for a in anns if a is not anns[1])
    assert len(sample['data_samples'].gt_instances) == n_valid - 1
    assert len(sample['data_samples'].ignored_instances) >= 1
    model = build_detector(dict(type='MSLoRAResNet', depth=18,
                                adapter_cfg=dict(rank=16)))
    model.train()
    data = model.data_preprocessor(pseudo_collate([sample, dataset[1]]),
                                   True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
