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

from helpers import ROOT, build_detector, logged_messages, shared_data
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


NEU_DET = osp.join(osp.dirname(ROOT), 'shared', 'data', 'neu-det')
EUROSAT5 = osp.join(osp.dirname(ROOT), 'shared', 'data', 'eurosat5')
VOC = """<annotation><filename>{name}.jpg</filename>
<size><width>40</width><height>30</height><depth>3</depth></size>
{objects}</annotation>"""
OBJECT = """<object><name>{cls}</name><difficult>0</difficult><bndbox>
<xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax>
</bndbox></object>"""


def voc_folder(tmp_path, files: dict) -> str:
    """A VOC-style folder: ``images/<id>.jpg``, ``annotations/<id>.xml``
    (``files[id]``: a list of (class, box), or None for no XML file) and
    ``train.txt``."""
    import mmcv
    import numpy as np
    (tmp_path / 'images').mkdir()
    (tmp_path / 'annotations').mkdir()
    for name, objects in files.items():
        mmcv.imwrite(np.full((30, 40, 3), 128, np.uint8),
                     str(tmp_path / 'images' / f'{name}.jpg'))
        if objects is not None:
            (tmp_path / 'annotations' / f'{name}.xml').write_text(VOC.format(
                name=name, objects=''.join(OBJECT.format(cls=c, b=b)
                                           for c, b in objects)))
    (tmp_path / 'train.txt').write_text('\n'.join(files) + '\n')
    return str(tmp_path)


def xml_dataset(root: str, classes=('scratch', 'dent'), **kwargs):
    from mmdet.registry import DATASETS
    return DATASETS.build(dict(
        type='CheckedXMLDataset', data_root=root, ann_file='train.txt',
        metainfo=dict(classes=classes), data_prefix=dict(sub_data_root=''),
        img_subdir='images', ann_subdir='annotations', pipeline=[],
        **kwargs))


def test_voc_folder_by_config_and_bad_xml_named(tmp_path):
    """A user's folder of VOC XML files loads by config alone; a missing
    XML file, an unknown class and boxes outside the image are reported
    with the file's name, and everything else is kept."""
    root = voc_folder(tmp_path, {
        'good': [('scratch', (2, 3, 20, 25)), ('dent', (5, 5, 10, 12))],
        'no_xml': None,
        'odd': [('crack', (1, 1, 5, 5)), ('dent', (30, 10, 60, 20)),
                ('scratch', (45, 2, 50, 9))],
    })
    (tmp_path / 'annotations' / 'broken.xml').write_text('<annotation>')
    (tmp_path / 'images' / 'broken.jpg').write_bytes(
        (tmp_path / 'images' / 'good.jpg').read_bytes())
    with open(tmp_path / 'train.txt', 'a') as f:
        f.write('broken\n')
    with logged_messages() as messages:
        ds = xml_dataset(root)
        ds.full_init()
    log = '\n'.join(messages)
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    assert [d['img_id'] for d in infos] == ['good', 'odd']
    good, odd = infos
    assert [i['bbox'] for i in good['instances']] == [[1, 2, 19, 24],
                                                      [4, 4, 9, 11]]
    assert [i['bbox_label'] for i in good['instances']] == [0, 1]
    # the dent reaching outside is clipped to x <= 40; the scratch wholly
    # outside and the unknown class are left out
    assert [(i['bbox'], i['bbox_label']) for i in odd['instances']] == [
        ([29, 9, 39, 19], 1)]
    assert 'no_xml.xml' in log and 'broken.xml' in log
    assert "odd.xml: 'crack'" in log and 'add the class' in log
    assert 'odd.xml: [45.0, 2.0, 50.0, 9.0]' in log
    assert 'clipped' in log and 'odd.xml: [30.0, 10.0, 60.0, 20.0]' in log


def test_voc_folder_without_usable_images_says_where_it_looked(tmp_path):
    root = voc_folder(tmp_path, {'a': None})
    with pytest.raises(ValueError, match='no usable image.*annotations'):
        xml_dataset(root).full_init()


def test_neu_det_config_reads_every_box():
    """The NEU-DET experiment config's datasets: 1,440 / 360 images, every
    box of their XML files, six classes."""
    shared_data('neu-det')
    import xml.etree.ElementTree as ET
    from mmengine.config import Config
    from mmdet.registry import DATASETS
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs/experiments/'
        'faster-rcnn_efficientnet-lite0_mslora_neu-det.py'))
    for split, count in (('train', 1440), ('val', 360)):
        ds_cfg = cfg[f'{split}_dataloader'].dataset
        ds_cfg.data_root = NEU_DET + '/'
        ds = DATASETS.build(dict(ds_cfg, pipeline=[]))
        ds.full_init()
        assert len(ds) == count
        sample = ds.get_data_info(7)
        root = ET.parse(sample['xml_path']).getroot()
        assert len(sample['instances']) == len(root.findall('object'))
    assert len(ds.metainfo['classes']) == 6


def test_per_class_subset_draws_fixed_images_per_class():
    shared_data('eurosat5')
    from mmengine.config import Config
    from mmengine.registry import DATASETS, DefaultScope
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs/experiments/efficientnet-lite0_mslora_eurosat5-20pc.py'
    ))
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.dataset.data_root = EUROSAT5
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        a, b = DATASETS.build(ds_cfg), DATASETS.build(ds_cfg)
        larger = DATASETS.build(dict(ds_cfg, per_class=100))
    labels = [a.get_data_info(i)['gt_label'] for i in range(len(a))]
    assert len(a) == 100 and sorted(set(labels)) == [0, 1, 2, 3, 4]
    assert all(labels.count(c) == 20 for c in range(5))
    assert a.indices == b.indices  # the same draw each time
    assert len(larger) == 500 and a.metainfo['classes'][0] == 'Forest'
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        with pytest.raises(ValueError, match="'Forest' has only 2400"):
            DATASETS.build(dict(ds_cfg, per_class=2401))
        # a test split from what the 200-a-class draw (seed 0) left
        train = DATASETS.build(dict(ds_cfg, per_class=200))
        aside = DATASETS.build(dict(ds_cfg, per_class=[60, 50, 40, 60, 50],
                                    seed=1, exclude=dict(per_class=200,
                                                         seed=0)))
        with pytest.raises(ValueError, match="'Forest' has only 2200 "
                           "images left to draw 2201"):
            DATASETS.build(dict(ds_cfg, per_class=2201,
                                exclude=dict(per_class=200, seed=0)))
        with pytest.raises(ValueError, match='gives 2 counts for 5 classes'):
            DATASETS.build(dict(ds_cfg, per_class=[1, 2]))
    assert set(a.indices) <= set(larger.indices) <= set(train.indices)
    assert not set(aside.indices) & set(train.indices)
    aside_labels = [aside.get_data_info(i)['gt_label']
                    for i in range(len(aside))]
    assert [aside_labels.count(c) for c in range(5)] == [60, 50, 40, 60, 50]


def _coco_frames(root, names, classes=('thing', )):
    """A COCO-JSON detection set of ``names`` (8x8 images on disk, one box
    each, category by position) and its config (no pipeline)."""
    from PIL import Image
    images = [dict(id=i, file_name=n, width=8, height=8)
              for i, n in enumerate(names)]
    anns = [dict(id=i, image_id=i, category_id=1 + i % len(classes),
                 bbox=[0, 0, 4, 4], area=16, iscrowd=0)
            for i in range(len(names))]
    root.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new('RGB', (8, 8)).save(root / n)
    ann_file = root / 'ann.json'
    ann_file.write_text(json.dumps(dict(
        images=images, annotations=anns,
        categories=[dict(id=1 + c, name=name)
                    for c, name in enumerate(classes)])))
    return dict(type='mmdet.CocoDataset', ann_file=str(ann_file),
                data_prefix=dict(img=str(root)),
                metainfo=dict(classes=tuple(classes)), pipeline=[])


def _paths(dataset):
    return [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]


def test_holdout_under_repeat_and_class_balance_shares_no_image(tmp_path):
    """The split is drawn on the images below RepeatDataset /
    ClassBalancedDataset: the held-out part lists each held-out image once,
    the fit part is the wrapper around the other images."""
    from mslora_mm.datasets import HoldoutSplit
    inner = _coco_frames(tmp_path / 'd', [f'{i}.jpg' for i in range(20)],
                         classes=('a', 'b', 'c', 'd', 'e'))
    for wrapper, grown in ((dict(type='RepeatDataset', times=3), 3),
                           (dict(type='ClassBalancedDataset',
                                 oversample_thr=0.0), 1)):
        config = dict(wrapper, dataset=inner)
        fit = HoldoutSplit(config, 0.2, 'fit', seed=0)
        held = HoldoutSplit(config, 0.2, 'holdout', seed=0)
        assert type(fit.part_dataset).__name__ == wrapper['type']
        assert len(held) == 4 and len(set(_paths(held))) == 4
        assert len(fit) == 16 * grown and len(set(_paths(fit))) == 16
        assert not set(_paths(fit)) & set(_paths(held))
        assert fit.shared_images == held.shared_images == 0
        assert fit.drawn == 'by image'
        assert fit[0]['img_path'] in _paths(fit)


def test_holdout_under_concat_splits_both_datasets_once(tmp_path):
    from mslora_mm.datasets import HoldoutSplit
    first = _coco_frames(tmp_path / 'a', [f'a{i}.jpg' for i in range(6)])
    second = _coco_frames(tmp_path / 'b', [f'b{i}.jpg' for i in range(4)])
    config = dict(type='ConcatDataset', datasets=[first, second])
    fit = HoldoutSplit(config, 0.3, 'fit', seed=2)
    held = HoldoutSplit(config, 0.3, 'holdout', seed=2)
    assert len(held) == 3 and not set(_paths(fit)) & set(_paths(held))
    assert len(set(_paths(fit)) | set(_paths(held))) == 10
    assert len(fit) == 7 and type(fit.part_dataset).__name__ == \
        'ConcatDataset'
    # the same image in both datasets is one image: on one side
    twice = dict(type='ConcatDataset', datasets=[first, first])
    fit = HoldoutSplit(twice, 0.5, 'fit', seed=0)
    held = HoldoutSplit(twice, 0.5, 'holdout', seed=0)
    assert len(fit) + len(held) == 12 and len(held) == 6
    assert not set(_paths(fit)) & set(_paths(held))
    assert held.shared_images == 0


def test_holdout_refuses_a_wrapper_it_cannot_see_through(tmp_path):
    from mslora_mm.datasets import HoldoutSplit
    inner = _coco_frames(tmp_path / 'd', [f'{i}.jpg' for i in range(6)])
    with pytest.raises(ValueError,
                       match='cannot see through MultiImageMixDataset'):
        HoldoutSplit(dict(type='MultiImageMixDataset', dataset=inner,
                          pipeline=[]), 0.2, 'fit')


def test_holdout_groups_keep_a_video_on_one_side(tmp_path):
    """CamVid-style frames SEQ_frame.jpg: whole sequences are held out,
    nearest the fraction; by a metainfo key the same; a name the pattern
    misses is named."""
    from mslora_mm.datasets import HoldoutSplit
    lengths = dict(A=12, B=5, C=3, D=10)
    names = [f'{s}_{f:04d}.jpg' for s, n in lengths.items()
             for f in range(n)]
    config = _coco_frames(tmp_path / 'd', names)
    drawn = set()
    for seed in range(6):
        fit = HoldoutSplit(config, 0.2, 'fit', seed, groups='^([^_]+)_')
        held = HoldoutSplit(config, 0.2, 'holdout', seed,
                            groups='^([^_]+)_')
        seqs = [{osp.basename(p)[0] for p in _paths(d)} for d in (fit, held)]
        assert not seqs[0] & seqs[1] and seqs[0] | seqs[1] == set(lengths)
        assert len(held) == sum(lengths[s] for s in seqs[1])  # whole ones
        assert len(fit) == 30 - len(held)
        assert held.shared_images == 0
        assert held.drawn.startswith("by group ('^([^_]+)_'; ")
        drawn.add(frozenset(seqs[1]))
    assert len(drawn) > 1  # the seed draws
    # a whole-match pattern, and a key of the items' data info
    whole = HoldoutSplit(config, 0.2, 'holdout', 1, groups='^[A-Z]')
    assert _paths(whole) == _paths(HoldoutSplit(
        config, 0.2, 'holdout', 1, groups='^([^_]+)_'))
    by_id = HoldoutSplit(config, 0.2, 'holdout', 1, groups='metainfo:img_id')
    assert _paths(by_id) == _paths(HoldoutSplit(config, 0.2, 'holdout', 1))
    with pytest.raises(ValueError, match=r'30 item\(s\) in 1 group'):
        HoldoutSplit(config, 0.2, 'fit', groups='metainfo:width')
    with pytest.raises(ValueError, match=r"'A_0000.jpg' .*does not match"):
        HoldoutSplit(config, 0.2, 'fit', groups='^seq(\\d+)')
    with pytest.raises(ValueError, match="has no 'video'"):
        HoldoutSplit(config, 0.2, 'fit', groups='metainfo:video')


def test_holdout_of_distinct_images_is_the_seeded_draw_it_always_was():
    """Without groups (each image its own), the held-out items are the first
    round(fraction * n) of the seed's permutation, per label: the split the
    committed comparisons were selected on."""
    from mslora_mm.datasets.holdout import holdout_indices
    fit, held = holdout_indices([0] * 10 + [1] * 5, 0.2, seed=7)
    rng = np.random.RandomState(7)
    expected = sorted(list(rng.permutation(10)[:2]) +
                      [10 + j for j in rng.permutation(5)[:1]])
    assert held == expected and len(fit) == 12
    # a duplicated image is one group whatever the labels say
    fit, held = holdout_indices([0, 0, 0, 0], 0.5, 0, groups=['x', 'y', 'x',
                                                              'z'])
    assert {0, 2} <= set(fit) or {0, 2} <= set(held)


def test_eurosat5_aside_test_split_is_disjoint_from_every_training_draw():
    """The data-efficiency configs' test split: 2,600 training-folder images
    in the val split's class counts, none in any training draw (20, 100,
    200 a class); the old val split is the second test split."""
    shared_data('eurosat5')
    from mmengine.config import Config
    from mmengine.registry import DATASETS, DefaultScope

    def build(name: str, key: str):
        cfg = Config.fromfile(osp.join(
            ROOT, f'configs/experiments/efficientnet-lite0_mslora_{name}.py'))
        ds = cfg[key].dataset
        inner = ds.get('dataset', ds)
        inner.data_root = EUROSAT5
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            return DATASETS.build(ds)

    aside = build('eurosat5-aside', 'test_dataloader')
    paths = {aside.get_data_info(i)['img_path'] for i in range(len(aside))}
    labels = [aside.get_data_info(i)['gt_label'] for i in range(len(aside))]
    assert len(paths) == 2600 and all('/train/' in p for p in paths)
    assert [labels.count(c) for c in range(5)] == [600, 500, 400, 600, 500]
    for name in ('eurosat5-aside', 'eurosat5-aside-100pc',
                 'eurosat5-aside-20pc'):
        train = build(name, 'train_dataloader')
        used = {train.get_data_info(i)['img_path'] for i in range(len(train))}
        assert len(used) in (1000, 500, 100) and not used & paths, name
    second = build('eurosat5-aside', 'second_test_dataloader')
    assert len(second) == 2600
    assert all('/val/' in second.get_data_info(i)['img_path']
               for i in range(0, 2600, 97))
