"""End to end through the real tools on ../shared/data/minicoco."""
import glob
import json
import os
import os.path as osp
import pickle
import shutil
import subprocess
import sys

import mmcv
import numpy as np
import pytest
import torch

from helpers import (MINICOCO, ROOT, coco_metrics, free_port,
                     minicoco_config, run_tool)

pytestmark = pytest.mark.slow


def test_train_then_test_dumps_and_paints_every_image(trained_r18):
    """tools/train.py then tools/test.py CONFIG CKPT --out --show-dir: box
    and mask metrics, a prediction per val image in the pickle, a picture
    per val image under work_dir/<timestamp>/shown."""
    assert osp.isfile(trained_r18['checkpoint'])
    out = trained_r18['test_out']
    assert 'coco/bbox_mAP:' in out and 'coco/segm_mAP:' in out
    with open(trained_r18['preds'], 'rb') as f:
        predictions = pickle.load(f)
    val = osp.join(MINICOCO, 'images')
    with open(osp.join(MINICOCO, 'annotations/instances_val.json')) as f:
        images = {i['file_name']: i for i in json.load(f)['images']}
    assert len(predictions) == len(images) == 10
    for p in predictions:
        assert set(p['pred_instances']) >= {'bboxes', 'scores', 'labels',
                                            'masks'}
    painted = glob.glob(osp.join(trained_r18['test'], '*', 'shown', '*'))
    assert sorted(map(osp.basename, painted)) == sorted(images)
    for path in painted:
        info = images[osp.basename(path)]
        drawn = mmcv.imread(path)
        original = mmcv.imread(osp.join(val, info['file_name']))
        # ground truth beside the prediction, each at the image's size
        assert drawn.shape == (info['height'], 2 * info['width'], 3)
        assert not np.array_equal(drawn[:, :info['width']], original)


def test_auto_scale_lr_scales_by_the_total_batch(trained_r18):
    """--auto-scale-lr: lr x (2 images x 1 process) / base_batch_size 16."""
    assert 'Scaling the original LR by 0.125' in trained_r18['train_out']
    ckpt = torch.load(trained_r18['checkpoint'], weights_only=True)
    lrs = [g['initial_lr'] for g in ckpt['optimizer']['param_groups']]
    assert lrs == pytest.approx([1e-3 * 2 / 16] * len(lrs))


def test_resume_from_an_explicit_checkpoint(trained_r18, tmp_path):
    """--resume CKPT into an empty work dir: training goes on from iteration
    2 with the checkpoint's optimizer state (AdamW's step count 2 -> 4)."""
    work = tmp_path / 'resumed'
    out = run_tool('tools/train.py', trained_r18['config'], '--work-dir',
                   str(work), '--resume', trained_r18['checkpoint'],
                   '--cfg-options', 'train_cfg.max_iters=4')
    assert 'resumed epoch: 0, iter: 2' in out
    assert not osp.isfile(work / 'iter_2.pth')
    resumed = torch.load(work / 'iter_4.pth', weights_only=True)
    assert resumed['meta']['iter'] == 4
    steps = {float(s['step']) for s in resumed['optimizer']['state'].values()}
    assert steps == {4.0}


def test_dist_test_two_processes_match_one(trained_r18, tmp_path):
    """tools/dist_test.sh with 2 processes (gloo): every val image is
    evaluated once across the ranks, to the metrics of one process (one
    image a batch in both: a batch's padding changes its images' boxes)."""
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()))
    proc = subprocess.run(
        ['bash', 'tools/dist_test.sh', trained_r18['config'],
         trained_r18['checkpoint'], '2', '--work-dir', str(tmp_path / 'dist'),
         '--cfg-options', 'test_dataloader.batch_size=1'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'Distributed training: True' in out
    assert coco_metrics(out) == coco_metrics(trained_r18['test_out'])


def test_infer_and_maps_take_an_adapter_file_and_a_folder(trained_r18,
                                                          tmp_path):
    """infer.py and reweighting_maps.py given the training's adapter file
    (onto the config's pretrained body) and a folder of images: the same
    predictions and maps as the full checkpoint, a picture per image."""
    folder = tmp_path / 'images'
    folder.mkdir()
    names = sorted(os.listdir(osp.join(MINICOCO, 'images')))[:3]
    for name in names:
        (folder / name).symlink_to(osp.join(MINICOCO, 'images', name))
    adapter = osp.join(trained_r18['work'], 'adapter_iter_2.safetensors')
    drawn = {}
    for kind, weights in (('adapter', adapter),
                          ('full', trained_r18['checkpoint'])):
        out = tmp_path / kind
        log = run_tool('tools/infer.py', str(folder), trained_r18['config'],
                       weights, '--out-dir', str(out), '--score-thr', '0')
        assert sum(str(folder / n) in log for n in names) == 3
        drawn[kind] = {}
        for name in names:
            stem = osp.splitext(name)[0]
            assert mmcv.imread(str(out / f'{stem}.png')) is not None
            drawn[kind][stem] = json.loads((out / f'{stem}.json').read_text())
        maps = run_tool('tools/analysis/reweighting_maps.py',
                        trained_r18['config'], weights, str(folder), '--out',
                        str(tmp_path / f'{kind}.png'), '--json',
                        str(tmp_path / f'{kind}.json'))
        assert f'3 images, drawing the first: {folder / names[0]}' in maps
    assert drawn['adapter'] == drawn['full']
    assert any(d['bboxes'] for d in drawn['full'].values())
    stats = {kind: json.loads((tmp_path / f'{kind}.json').read_text())
             for kind in drawn}
    assert stats['adapter'] == stats['full'] and stats['full']
    assert all(s['delta_norm_max'] > 0 for s in stats['full'].values())



def test_tools_bind_adapter_files_to_their_base(trained_r18, tmp_path):
    """test.py, infer.py and adapter.py merge, given the training's adapter
    file and a config pointing at other frozen weights, refuse it, naming
    both bases, the first differing tensor and the fix; the same weights
    under another name evaluate as before; --allow-other-base loads with a
    warning."""
    base = trained_r18['base']
    state = torch.load(base, weights_only=True)
    state['layer3.0.conv2.weight'].view(-1)[0] += 1e-3
    other = str(tmp_path / 'other.pth')
    torch.save(state, other)
    renamed = tmp_path / 'copy' / 'renamed.pth'
    renamed.parent.mkdir()
    shutil.copy(base, renamed)
    adapter = osp.join(trained_r18['work'], 'adapter_iter_2.safetensors')
    config = trained_r18['config']
    image = osp.join(MINICOCO, 'images',
                     sorted(os.listdir(osp.join(MINICOCO, 'images')))[0])

    def onto(checkpoint):
        return ('--cfg-options',
                f'model.backbone.init_cfg.checkpoint={checkpoint}',
                'test_dataloader.batch_size=1')

    for args in (('tools/test.py', config, adapter, '--work-dir',
                  str(tmp_path / 'refused')),
                 ('tools/infer.py', image, config, adapter, '--out-dir',
                  str(tmp_path / 'refused')),
                 ('tools/adapter.py', 'merge', config, adapter, '--out',
                  str(tmp_path / 'merged.pth'))):
        out = run_tool(*args, *onto(other), ok=False)
        for part in (f'trained on the frozen backbone of {base}',
                     f'from {other}', 'first backbone.layer3.0.conv2.weight',
                     f'--cfg-options model.backbone.init_cfg.checkpoint={base}',
                     '--allow-other-base'):
            assert part in out, (args[0], part, out[-3000:])
    assert not osp.exists(tmp_path / 'merged.pth')
    same = run_tool('tools/test.py', config, adapter, '--work-dir',
                    str(tmp_path / 'renamed'), *onto(renamed))
    assert coco_metrics(same) == coco_metrics(trained_r18['test_out'])
    allowed = run_tool('tools/infer.py', image, config, adapter, '--out-dir',
                       str(tmp_path / 'allowed'), '--allow-other-base',
                       *onto(other))
    assert 'first backbone.layer3.0.conv2.weight' in allowed
    assert 'loading anyway' in allowed
    stem = osp.splitext(osp.basename(image))[0]
    assert mmcv.imread(str(tmp_path / 'allowed' / f'{stem}.png')) is not None

SWIN_BACKBONE = """
model = dict(
    backbone=dict(_delete_=True, type='MSLoRASwin', embed_dims=32,
                  depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=4,
                  out_indices=(0, 1, 2, 3), drop_path_rate=0.2,
                  frozen_stages=1, adapter_cfg=dict(rank=16)),
    neck=dict(in_channels=[32, 64, 128, 256]))
"""
DIST_CASES = {
    # BasicBlock adapters and Swin adapters in a frozen stage, DDP without
    # find_unused_parameters; R-18 also with SyncBN conversion
    'r18-frozen1-syncbn': ("model['backbone']['frozen_stages'] = 1\n"
                           "sync_bn = 'torch'\n"),
    'swin-frozen1': SWIN_BACKBONE,
}


@pytest.mark.parametrize('case', list(DIST_CASES))
def test_dist_train_two_processes_gloo(case, tmp_path, minicoco):
    dump = tmp_path / 'ranks'
    cfg = minicoco_config(
        tmp_path, minicoco, max_iters=2,
        extra=("custom_imports = dict(imports=['mslora_mm', 'e2e_hooks'],"
               " allow_failed_imports=False)\n"
               f"custom_hooks = [dict(type='RankDumpHook', out_dir='{dump}')]"
               "\nfind_unused_parameters = False\n" + DIST_CASES[case]))
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               PYTHONPATH=osp.join(ROOT, 'tests'))
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir',
         str(tmp_path / 'work')], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'unused parameters' not in out.lower()
    rank0 = torch.load(dump / 'rank0.pth', weights_only=True)
    rank1 = torch.load(dump / 'rank1.pth', weights_only=True)
    assert rank0.keys() == rank1.keys() and len(rank0) > 0
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    trained = [k for k, v in rank0.items()
               if k.endswith('up.weight') and torch.count_nonzero(v)]
    assert trained, 'adapters did not train'
    # adapters of the frozen first stage stayed at their zero init
    first = ('backbone.layer1.', 'backbone.stages.0.')
    assert not [k for k in trained if k.startswith(first)]


def test_amp_flag_trains_on_this_machine(tmp_path, minicoco):
    """``--amp`` as mmdet users pass it: bf16 autocast without CUDA."""
    cfg = minicoco_config(tmp_path, minicoco)
    out = run_tool('tools/train.py', cfg, '--amp', '--work-dir',
                   str(tmp_path / 'work'))
    expected = 'AmpOptimWrapper' if torch.cuda.is_available() else \
        'bfloat16 autocast'
    assert expected in out
    ckpt = torch.load(tmp_path / 'work' / 'iter_2.pth', weights_only=True)
    ups = [v for k, v in ckpt['state_dict'].items() if k.endswith('up.weight')]
    assert ups and all(torch.isfinite(v).all() for v in ups)
    assert any(torch.count_nonzero(v) for v in ups)


def test_killed_run_resumes_with_same_state(tmp_path, minicoco):
    state_file = tmp_path / 'start_state.pth'
    extra = ("custom_imports = dict(imports=['mslora_mm', 'e2e_hooks'],"
             " allow_failed_imports=False)\n"
             "custom_hooks = [dict(type='KillAtIterHook', at=3), "
             f"dict(type='TrainStartStateHook', out_file='{state_file}')]")
    cfg = minicoco_config(tmp_path, minicoco, max_iters=4, extra=extra)
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHONPATH=osp.join(ROOT, 'tests'))
    killed = subprocess.run(
        [sys.executable, 'tools/train.py', cfg, '--work-dir', str(work)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert killed.returncode == -9  # SIGKILL in the middle of iteration 3
    assert osp.isfile(work / 'iter_2.pth')
    assert not osp.isfile(work / 'iter_4.pth')

    out = run_tool('tools/train.py', cfg, '--work-dir', str(work), '--resume',
                   '--cfg-options', 'custom_hooks.0.at=-1', env=env)
    assert 'resumed epoch: 0, iter: 2' in out
    saved = torch.load(work / 'iter_2.pth', weights_only=True)
    start = torch.load(state_file, weights_only=True)
    assert start['iter'] == 2
    assert start['param_schedulers'] == saved['param_schedulers']
    opt_saved, opt_start = saved['optimizer'], start['optimizer']
    assert opt_saved['param_groups'] == opt_start['param_groups']
    assert opt_saved['state'].keys() == opt_start['state'].keys()
    for idx, state in opt_saved['state'].items():
        for key, value in state.items():
            assert torch.equal(value, opt_start['state'][idx][key]), key
    final = torch.load(work / 'iter_4.pth', weights_only=True)
    assert final['meta']['iter'] == 4
