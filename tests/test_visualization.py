"""tools/infer.py, tools/analysis/reweighting_maps.py and plot_curves.py:
real pixels and plotted values, and clear errors on bad input."""
import json
import os
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from helpers import shared_data
from helpers import minicoco_config, run_tool
from mmdet.structures import DetDataSample

from mslora_mm.visualization import (adapter_maps, draw_predictions,
                                     draw_reweighting_maps, plot_curves,
                                     read_curves)

TINY = ['model.test_cfg.rcnn.max_per_img=2',
        'model.test_cfg.rcnn.score_thr=0.0']


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """An R-18 MSLoRA Mask R-CNN config on minicoco (128 px) and a full
    checkpoint of it whose adapters are perturbed (not the identity)."""
    from helpers import MINICOCO
    from mslora_mm.cli import load_config
    from mmdet.registry import MODELS
    shared_data('minicoco')
    tmp = tmp_path_factory.mktemp('tiny')
    config = minicoco_config(tmp, MINICOCO)
    torch.manual_seed(0)
    model = MODELS.build(load_config(config).model)
    model.init_weights()
    state = model.state_dict()
    identity = tmp / 'identity.pth'
    torch.save({'state_dict': state}, identity)
    for k, v in state.items():
        if k.endswith('mslora.up.weight'):
            v.normal_(0, 0.1)
    perturbed = tmp / 'perturbed.pth'
    torch.save({'state_dict': state}, perturbed)
    image = osp.join(MINICOCO, 'images', sorted(
        f for f in os.listdir(osp.join(MINICOCO, 'images'))
        if f.endswith('.jpg'))[0])
    return dict(config=config, identity=str(identity),
                perturbed=str(perturbed), image=image, tmp=tmp)


def test_known_box_is_drawn_in_place():
    """A box [40, 30, 100, 90] on a grey image: its outline changes, its
    inside (away from the label) and everything outside stay as they
    were."""
    image = np.full((160, 200, 3), 100, np.uint8)
    sample = DetDataSample()
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([[40., 30., 100., 90.]]),
        labels=torch.tensor([0]), scores=torch.tensor([0.9]))
    drawn = draw_predictions(image, sample, dict(classes=('thing', )), 0.3, 1)
    assert drawn.shape == image.shape
    changed = np.abs(drawn.astype(int) - image).sum(-1) > 0
    for x, y in ((40, 60), (100, 60), (70, 30), (70, 90)):  # the outline
        assert changed[y, x], (x, y)
    assert not changed[75:88, 60:97].any()  # inside, below the label
    outside = np.ones_like(changed)
    outside[26:95, 36:105] = False  # the box, its line and its label
    outside[26:60, 36:170] = False
    assert not changed[outside].any()
    below = draw_predictions(image, sample, dict(classes=('thing', )), 0.95,
                            1)
    assert (below == image).all()  # under the threshold: nothing drawn


def test_infer_cli_draws_only_where_it_detects(tiny):
    """--score-thr 0 on a real image: the PNG equals the input away from
    the printed detections and differs on their outlines."""
    out = tiny['tmp'] / 'infer'
    log = run_tool('tools/infer.py', tiny['image'], tiny['config'],
                   tiny['perturbed'], '--out-dir', str(out),
                   '--score-thr', '0', '--cfg-options', *TINY)
    name = osp.splitext(osp.basename(tiny['image']))[0]
    assert f'{tiny["image"]}: 2 detections' in log
    image = mmcv.imread(tiny['image'], channel_order='rgb')
    drawn = mmcv.imread(str(out / f'{name}.png'), channel_order='rgb')
    assert drawn.shape == image.shape
    boxes = json.loads((out / f'{name}.json').read_text())['bboxes']
    assert len(boxes) == 2
    changed = np.abs(drawn.astype(int) - image).sum(-1) > 0
    near = np.zeros_like(changed)
    h, w = changed.shape
    for x1, y1, x2, y2 in boxes:
        near[max(int(y1) - 3, 0):int(y2) + 4,
             max(int(x1) - 3, 0):int(x2) + 4] = True
        near[max(int(y1) - 3, 0):int(y1) + 40,
             max(int(x1) - 3, 0):int(x1) + 200] = True  # the label
        x, y = int(round(x1)), int((y1 + y2) / 2)
        assert changed[y, min(max(x, 0), w - 1)]  # the left edge
    assert changed.any() and not changed[~near].any()
    assert (~near).mean() > 0.2


def test_infer_errors_name_the_input(tiny, tmp_path):
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'not an image')
    log = run_tool('tools/infer.py', str(bad), tiny['config'],
                   tiny['identity'], '--out-dir', str(tmp_path), ok=False)
    assert f'{bad} cannot be read as an image' in log
    log = run_tool('tools/infer.py', str(tmp_path / 'none*.jpg'),
                   tiny['config'], tiny['identity'], ok=False)
    assert 'none*.jpg: no image file' in log
    log = run_tool('tools/infer.py', tiny['image'], tiny['config'],
                   tiny['identity'], '--cfg-options',
                   'model.roi_head.bbox_head.num_classes=5', ok=False)
    assert f'checkpoint {tiny["identity"]} does not fit' in log
    assert 'roi_head.bbox_head.fc_cls.weight' in log


def test_reweighting_maps_zero_for_identity_and_not_when_trained(tiny):
    from mslora_mm.apis import init_model
    sites = ['layer1.0', 'layer4.*']
    for weights, zero in ((tiny['identity'], True),
                          (tiny['perturbed'], False)):
        out = tiny['tmp'] / f'maps_{zero}.png'
        stats = tiny['tmp'] / f'maps_{zero}.json'
        run_tool('tools/analysis/reweighting_maps.py', tiny['config'],
                 weights, tiny['image'], '--out', str(out), '--json',
                 str(stats), '--sites', *sites)
        stats = json.loads(stats.read_text())
        assert list(stats) == ['layer1.0', 'layer4.0', 'layer4.1']
        for s in stats.values():
            assert (s['delta_ratio_max'] == 0) == zero, s
        assert mmcv.imread(str(out)).shape[0] >= 3 * 250  # a row per site
    model = init_model(tiny['config'], tiny['perturbed'])
    maps = adapter_maps(model, tiny['image'])
    assert len(maps) == 8  # every BasicBlock of the R-18
    fig = draw_reweighting_maps(
        mmcv.imread(tiny['image'], channel_order='rgb'), sites[:1], maps)
    images = [ax for ax in fig.axes if ax.get_images()]
    assert len(images) == 3  # the image, ‖H‖ and T(Pa) for one site
    delta = maps['layer1.0']['delta']
    np.testing.assert_allclose(
        images[1].get_images()[1].get_array().max(),
        float(delta.norm(dim=0).max()), rtol=0.05)


def test_reweighting_maps_errors(tiny):
    log = run_tool('tools/analysis/reweighting_maps.py', tiny['config'],
                   tiny['identity'], tiny['image'], '--sites', 'layer9.*',
                   ok=False)
    assert "--sites 'layer9.*' matches no adapter" in log
    assert 'layer1.0' in log


def test_plot_curves_plots_exactly_the_logged_values(tmp_path):
    runs = {}
    for name, offset in (('full', 0.0), ('mslora', 0.5)):
        vis = tmp_path / name / '20260101_000000' / 'vis_data'
        vis.mkdir(parents=True)
        lines = [dict(loss=3.0 - i + offset, lr=0.1, step=i * 10)
                 for i in range(1, 4)]
        lines.insert(2, {'coco/bbox_mAP': 0.1 + offset, 'step': 1})
        lines.append({'coco/bbox_mAP': 0.2 + offset, 'step': 2})
        (vis / 'scalars.json').write_text(
            '\n'.join(json.dumps(l) for l in lines) + '\n')
        runs[name] = str(tmp_path / name)
    out = tmp_path / 'curves.png'
    run_tool('tools/analysis/plot_curves.py', *runs.values(), '--keys',
             'loss', 'coco/bbox_mAP', '--out', str(out))
    assert mmcv.imread(str(out)).shape[1] >= 900
    curves = {n: read_curves(d, ['loss', 'coco/bbox_mAP'])
              for n, d in runs.items()}
    fig = plot_curves(curves, ['loss', 'coco/bbox_mAP'])
    loss, mAP = fig.axes
    assert [l.get_label() for l in loss.lines] == ['full', 'mslora']
    np.testing.assert_allclose(loss.lines[1].get_xydata(),
                               [[10, 2.5], [20, 1.5], [30, 0.5]])
    np.testing.assert_allclose(mAP.lines[0].get_xydata(),
                               [[1, 0.1], [2, 0.2]])
    with pytest.raises(ValueError, match=r"no value logged for \['acc'\]"):
        read_curves(runs['full'], ['acc'])
    with pytest.raises(FileNotFoundError, match='no .*scalars.json'):
        read_curves(str(tmp_path), ['loss'])


def test_infer_draws_top_labels_for_a_classifier(tmp_path):
    """A classification config (the ants/bees folders, R-18 MSLoRA): one
    PNG per image with the top-k labels drawn in the top-left corner, the
    class scores in the JSON."""
    from helpers import hymenoptera_config
    from mslora_mm.cli import load_config
    from mmengine.registry import MODELS
    data = shared_data('hymenoptera')
    options = ['model.head.in_channels=512',
               'model.backbone.plugin_position=None',
               'model.backbone.sites=[layer*.*]']
    config = hymenoptera_config(
        tmp_path, 'configs/classification/resnet50_mslora_food101.py', data,
        backbone=dict(depth=18, zero_init_residual=False))
    model = MODELS.build(load_config(config, {
        'model.head.in_channels': 512, 'model.backbone.plugin_position': None,
        'model.backbone.sites': ['layer*.*']}).model)
    weights = tmp_path / 'cls.pth'
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': {'classes': ['ants', 'bees']}}},
               weights)
    images = osp.join(data, 'val', 'bees')
    out = tmp_path / 'out'
    log = run_tool('tools/infer.py', images + '/*.jpg', config, str(weights),
                   '--out-dir', str(out), '--topk', '2', '--cfg-options',
                   *options)
    files = sorted(f for f in os.listdir(images) if f.endswith('.jpg'))
    assert log.count('top-1 class') == len(files)
    name = osp.splitext(files[0])[0]
    image = mmcv.imread(osp.join(images, files[0]), channel_order='rgb')
    drawn = mmcv.imread(str(out / f'{name}.png'), channel_order='rgb')
    changed = np.abs(drawn.astype(int) - image).sum(-1) > 0
    h, w = changed.shape
    assert changed[:h // 4, :w // 2].mean() > 0.02  # the labels' box
    assert not changed[h // 2:, :].any()  # nothing below
    scores = json.loads((out / f'{name}.json').read_text())['scores']
    assert len(scores) == 2 and abs(sum(scores) - 1) < 1e-4
