"""Adapter files: exact round trips, merge, sizes and clear errors."""
import copy
import json
import os.path as osp
import re
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from safetensors.torch import save_file

from helpers import ROOT
from helpers import fake_batch
from mmdet.registry import MODELS
from mslora_mm import adapter_modules
from mslora_mm.core.mslora import is_adapter_key
from mslora_mm.adapters import (AdapterFileError, apply_adapter_file,
                                load_adapter_file, read_adapter_file,
                                save_adapter_file, trained_state_dict)

CONFIGS = {
    'r50': 'configs/mask_rcnn_r50_mslora_1x.py',
    'swin-t': 'configs/swin/mask_rcnn_swin-t_mslora_1x.py',
}


def make_cfg(name, tmp_path, drop_keys=()):
    """The shipped config, its backbone init pointed at a base checkpoint
    that the test writes (a stand-in for torchvision / official Swin)."""
    cfg = Config.fromfile(osp.join(ROOT, CONFIGS[name]))
    torch.manual_seed(123)
    plain = MODELS.build(cfg.model.backbone)
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in plain.state_dict().items()
             if not is_adapter_key(k) and not k.startswith(drop_keys or '~')}
    base = tmp_path / f'{name}_base.pth'
    if name == 'swin-t':  # mmdet-format keys, no conversion
        cfg.model.backbone.convert_weights = False
        state = {f'backbone.{k}': v for k, v in state.items()}
    torch.save(state, base)
    cfg.model.backbone.init_cfg.checkpoint = str(base)
    for head in (cfg.model.roi_head.bbox_head, cfg.model.roi_head.mask_head):
        head.num_classes = 3
    return cfg


def trained_model(cfg, seed=0):
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.manual_seed(seed)
    with torch.no_grad():  # stands in for training
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def predict(model):
    data = fake_batch(model, batch_size=1, size=128)
    with torch.no_grad():
        out = model(**data, mode='predict')[0].pred_instances
    return out


def assert_same_predictions(a, b):
    pa, pb = predict(a), predict(b)
    assert len(pa) == len(pb)
    for key in ('bboxes', 'scores', 'labels', 'masks'):
        assert torch.equal(pa[key], pb[key]), key


@pytest.mark.parametrize('name', ['r50', 'swin-t'])
def test_export_load_merge_round_trip(name, tmp_path):
    cfg = make_cfg(name, tmp_path)
    model = trained_model(cfg)
    path = str(tmp_path / 'adapter.safetensors')
    save_adapter_file(model, path, cfg=cfg, classes=('a', 'b', 'c'))

    tensors, meta = read_adapter_file(path)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained <= set(tensors)  # every trained tensor ...
    assert not [k for k in tensors  # ... and no frozen one
                if k.startswith('backbone.') and not is_adapter_key(k)]
    assert meta.format == 'mslora-mm/adapter-v3'
    assert meta.backbone['type'] == cfg.model.backbone.type
    assert meta.adapter_cfg == json.loads(json.dumps(
        cfg.model.backbone.adapter_cfg.to_dict()))
    assert meta.base_checkpoint == cfg.model.backbone.init_cfg.checkpoint
    assert meta.classes == ['a', 'b', 'c']
    assert meta.sites == [n.rpartition('.')[0]
                          for n, _ in adapter_modules(model.backbone)]

    fresh = MODELS.build(cfg.model)
    apply_adapter_file(fresh, path)
    fresh.eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    assert_same_predictions(model, fresh)

    merged = tmp_path / 'merged.pth'
    torch.save({'state_dict': fresh.state_dict()}, merged)
    plain_load = MODELS.build(cfg.model)
    load_checkpoint(plain_load, str(merged), strict=True)
    assert_same_predictions(model, plain_load.eval())

    only = str(tmp_path / 'adapters_only.safetensors')
    save_adapter_file(model, only, cfg=cfg, adapters_only=True)
    backbone_bytes = sum(v.numel() * v.element_size()
                         for v in model.backbone.state_dict().values())
    assert osp.getsize(only) < 0.05 * backbone_bytes
    assert set(read_adapter_file(only)[0]) == {
        k for k in trained_state_dict(model) if is_adapter_key(k)}


def test_mismatched_files_name_keys_and_shapes(tmp_path):
    cfg = make_cfg('r50', tmp_path)
    path = str(tmp_path / 'rank64.safetensors')
    other = copy.deepcopy(cfg)
    other.model.backbone.adapter_cfg.rank = 64
    save_adapter_file(MODELS.build(other.model), path, cfg=other)
    with pytest.raises(AdapterFileError,
                       match=r'layer1.0.mslora.pv.weight: file \(64, 16'):
        load_adapter_file(MODELS.build(cfg.model), path)

    r18 = copy.deepcopy(cfg)
    r18.model.backbone.depth = 18
    r18.model.neck.in_channels = [64, 128, 256, 512]
    save_adapter_file(MODELS.build(r18.model), path, cfg=r18)
    with pytest.raises(AdapterFileError, match=r'missing backbone.layer1.2'):
        load_adapter_file(MODELS.build(cfg.model), path)


def test_foreign_truncated_and_missing_files(tmp_path):
    cfg = make_cfg('r50', tmp_path)
    model = MODELS.build(cfg.model)
    foreign = str(tmp_path / 'foreign.safetensors')
    save_file({'neck.w': torch.zeros(3)}, foreign)
    with pytest.raises(AdapterFileError, match='is not an MSLoRA adapter file: expected'):
        load_adapter_file(model, foreign)
    good = str(tmp_path / 'good.safetensors')
    save_adapter_file(model, good, cfg=cfg)
    data = open(good, 'rb').read()
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(data[:len(data) // 3])
    with pytest.raises(AdapterFileError, match='truncated or corrupt'):
        load_adapter_file(model, str(cut))
    with pytest.raises(FileNotFoundError, match='nope.safetensors'):
        load_adapter_file(model, str(tmp_path / 'nope.safetensors'))


def test_refuses_random_frozen_backbone(tmp_path):
    cfg = make_cfg('r50', tmp_path, drop_keys=('layer4.', ))
    path = str(tmp_path / 'a.safetensors')
    save_adapter_file(MODELS.build(cfg.model), path, cfg=cfg)
    with pytest.raises(AdapterFileError, match='left .* frozen backbone '
                       'tensors uninitialised'):
        apply_adapter_file(MODELS.build(cfg.model), path)
    cfg.model.backbone.init_cfg = None
    with pytest.raises(AdapterFileError, match='randomly initialised'):
        apply_adapter_file(MODELS.build(cfg.model), path)


@pytest.mark.slow
def test_adapter_tool_and_test_tool(tmp_path, trained_r18):
    """train (AdapterCheckpointHook) -> export -> inspect -> test.py on the
    file, and on two files at once (one model, one table) -> merge."""
    from helpers import coco_metrics as metrics, run_tool
    cfg, base = trained_r18['config'], trained_r18['base']
    work = Path(trained_r18['work'])
    assert osp.isfile(work / 'adapter_iter_2.safetensors')
    out = run_tool('tools/adapter.py', 'export', cfg, str(work / 'iter_2.pth'),
                   '--out', str(tmp_path / 'x.safetensors'))
    assert 'size vs full checkpoint' in out
    hook_file = read_adapter_file(str(work / 'adapter_iter_2.safetensors'))[0]
    tool_file = read_adapter_file(str(tmp_path / 'x.safetensors'))[0]
    assert hook_file.keys() == tool_file.keys()
    for k in hook_file:
        assert torch.equal(hook_file[k], tool_file[k]), k
    # inspect: the file's tensors, by group, as counted from the file
    from mslora_mm.core.mslora import is_adapter_key
    report = run_tool('tools/adapter.py', 'inspect',
                      str(tmp_path / 'x.safetensors'))
    assert f'{len(tool_file)} tensors' in report
    adapter_params = sum(v.numel() for k, v in tool_file.items()
                         if is_adapter_key(k))
    groups = {line.split()[0]: line.split()[1] for line in report.splitlines()
              if line.strip().endswith('MiB') and 'params' in line}
    assert groups['adapters'] == f'{adapter_params / 1e6:.3f}M'
    assert set(groups) > {'adapters'}  # neck and heads too
    only = run_tool('tools/adapter.py', 'export', cfg,
                    str(work / 'iter_2.pth'), '--adapters-only', '--out',
                    str(tmp_path / 'only.safetensors'))
    assert 'content: "adapters"' in only  # backbone adapters alone
    only_file = read_adapter_file(str(tmp_path / 'only.safetensors'))[0]
    assert set(only_file) == {k for k in tool_file if is_adapter_key(k)}
    # the fixture's test.py run on the full checkpoint (one image a batch)
    full, one = trained_r18['test_out'], ('--cfg-options',
                                          'test_dataloader.batch_size=1')
    adapted = run_tool('tools/test.py', cfg, str(tmp_path / 'x.safetensors'),
                       '--work-dir', str(tmp_path / 't2'), *one)

    assert metrics(full) == metrics(adapted)
    files = [str(work / f'adapter_iter_{i}.safetensors') for i in (1, 2)]
    both = run_tool('tools/test.py', cfg, *files, '--work-dir',
                    str(tmp_path / 't4'), *one)
    rows = {l.split('|')[1].strip(): l.split('|')[2:-1]
            for l in both.splitlines() if l.startswith('| /')}
    assert list(rows) == files
    box = metrics(adapted).split()[1]  # coco/bbox_mAP: VALUE
    assert rows[files[1]][0].strip() == box
    assert both.count(f'Loads checkpoint by local backend from path: {base}'
                      ) <= 1
    run_tool('tools/adapter.py', 'merge', cfg, str(tmp_path / 'x.safetensors'),
             '--out', str(tmp_path / 'merged.pth'))
    merged = run_tool('tools/test.py', cfg, str(tmp_path / 'merged.pth'),
                      '--work-dir', str(tmp_path / 't3'), *one)
    assert metrics(merged) == metrics(full)


@pytest.mark.slow
def test_adapter_checkpoint_hook_saves_every_epoch_by_default(tmp_path):
    """``AdapterCheckpointHook()`` as the docs add it (interval 1, by
    epoch) in an epoch-based run: one file after each epoch, holding the
    adapters of that epoch's full checkpoint."""
    from helpers import hymenoptera_config, run_tool, shared_data
    cfg = hymenoptera_config(
        tmp_path, 'configs/classification/resnet50_mslora_food101.py',
        shared_data('hymenoptera'), backbone=dict(zero_init_residual=False))
    with open(cfg, 'a') as f:
        f.write("train_cfg = dict(_delete_=True, by_epoch=True, "
                "max_epochs=2, val_interval=1000)\n"
                "default_hooks = dict(checkpoint=dict(by_epoch=True, "
                "interval=1))\n"
                "log_processor = dict(by_epoch=True)\n"
                "custom_hooks = [dict(type='AdapterCheckpointHook')]\n")
    work = tmp_path / 'work'
    run_tool('tools/train.py', cfg, '--work-dir', str(work),
             '--cfg-options', 'train_dataloader.dataset.indices=8')
    saved = sorted(p.name for p in work.glob('adapter_*.safetensors'))
    assert saved == ['adapter_epoch_1.safetensors',
                     'adapter_epoch_2.safetensors']
    files = []
    for epoch in (1, 2):
        tensors = read_adapter_file(
            str(work / f'adapter_epoch_{epoch}.safetensors'))[0]
        state = torch.load(work / f'epoch_{epoch}.pth',
                           weights_only=True)['state_dict']
        adapters = {k: v for k, v in tensors.items() if is_adapter_key(k)}
        assert adapters
        for k, v in adapters.items():
            assert torch.equal(v, state[k]), (epoch, k)
        files.append(adapters)
    assert any(not torch.equal(files[0][k], files[1][k]) for k in files[0])


def test_swapping_adapter_files_on_one_model(tmp_path, monkeypatch):
    """A -> B -> A on one model equals fresh loads of A and B, and the
    frozen backbone is read from its checkpoint once."""
    cfg = make_cfg('r50', tmp_path)
    paths = []
    for seed in (0, 1):
        paths.append(str(tmp_path / f'adapter_{seed}.safetensors'))
        save_adapter_file(trained_model(cfg, seed), paths[-1], cfg=cfg)
    fresh = []
    for path in paths:
        model = MODELS.build(cfg.model)
        apply_adapter_file(model, path)
        fresh.append(model.eval())
    from mmengine.runner import CheckpointLoader
    reads = []
    real = CheckpointLoader.load_checkpoint.__func__

    def counting(cls, filename, *args, **kwargs):
        reads.append(filename)
        return real(cls, filename, *args, **kwargs)

    monkeypatch.setattr(CheckpointLoader, 'load_checkpoint',
                        classmethod(counting))
    model = MODELS.build(cfg.model).eval()
    for i in (0, 1, 0):
        apply_adapter_file(model, paths[i])
        for key, value in fresh[i].state_dict().items():
            assert torch.equal(value, model.state_dict()[key]), key
        assert_same_predictions(fresh[i], model)
    assert reads == [cfg.model.backbone.init_cfg.checkpoint]
    # after init_weights the backbone already holds its checkpoint
    other = MODELS.build(cfg.model)
    other.init_weights()
    reads.clear()
    apply_adapter_file(other, paths[1])
    assert reads == []
    assert_same_predictions(fresh[1], other.eval())


def test_foreign_safetensors_file_is_named(tmp_path):
    path = str(tmp_path / 'model.safetensors')
    save_file({'encoder.weight': torch.zeros(2, 2)}, path,
              metadata={'format': 'pt'})
    with pytest.raises(AdapterFileError,
                       match=r"model.safetensors is not an MSLoRA adapter "
                       r"file: expected metadata format 'mslora-mm/adapter-v3'"
                       r".*found format 'pt'.*tools/adapter.py export"):
        read_adapter_file(path)


def test_adapter_file_of_a_declared_backbone(tmp_path):
    """MSLoRABackbone (ConvNeXt-T, mmpretrain): the file names the nested
    base checkpoint and applies onto a fresh model exactly."""
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/convnext/mask_rcnn_convnext-t_mslora_1x.py'))
    inner = cfg.model.backbone.backbone
    plain = MODELS.build({k: v for k, v in inner.items() if k != 'init_cfg'})
    base = tmp_path / 'convnext_base.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               plain.state_dict().items()}}, base)
    inner.init_cfg.checkpoint = str(base)
    for head in (cfg.model.roi_head.bbox_head, cfg.model.roi_head.mask_head):
        head.num_classes = 3
    model = trained_model(cfg)
    path = str(tmp_path / 'convnext.safetensors')
    meta = save_adapter_file(model, path, cfg=cfg)
    assert meta.base_checkpoint == str(base)
    assert read_adapter_file(path)[1] == meta
    fresh = MODELS.build(cfg.model)
    apply_adapter_file(fresh, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key


def test_schema_reads_every_version_and_writes_the_newest(tmp_path):
    """AdapterFileMeta: v1 metadata (no sites) reads, v2 round-trips, an
    unknown version or content is refused by name."""
    from mslora_mm.adapters import FORMAT, FORMATS, AdapterFileMeta
    assert FORMAT == FORMATS[-1] == 'mslora-mm/adapter-v3'
    meta = AdapterFileMeta(content='adapters', sites=['layer1.0'],
                           backbone=dict(type='MSLoRAResNet', depth=50))
    assert AdapterFileMeta.from_metadata(meta.to_metadata(), 'f') == meta
    v1 = {k: v for k, v in meta.to_metadata().items() if k != 'sites'}
    v1['format'] = '"mslora-mm/adapter-v1"'
    old = AdapterFileMeta.from_metadata(v1, 'old.safetensors')
    assert old.format == FORMATS[0] and old.sites is None
    assert old.backbone == meta.backbone and old.adapters_only
    for bad in ({'format': '"mslora-mm/adapter-v9"'},
                {'content': '"everything"'}):
        with pytest.raises(AdapterFileError, match='new.safetensors is not'):
            AdapterFileMeta.from_metadata(dict(meta.to_metadata(), **bad),
                                          'new.safetensors')


def test_configs_and_files_with_runtime_keys_still_load(tmp_path,
                                                         monkeypatch):
    """Configs and adapter files written when ``channels_last``,
    ``band_rows`` and ``fused_branches`` were adapter arguments (and
    ``with_cp='auto'``): the model builds (each key ignored, logged once),
    the file's metadata keeps only the method, and the file reproduces the
    model on one built from today's config."""
    from helpers import logged_messages
    from mslora_mm.core import runtime
    monkeypatch.setattr(runtime, '_REPORTED', set())
    legacy = dict(channels_last='auto', with_cp='auto', band_rows='auto',
                  fused_branches='auto')
    cfg = make_cfg('r50', tmp_path)
    old_cfg = copy.deepcopy(cfg)
    old_cfg.model.backbone.adapter_cfg.update(legacy)
    with logged_messages() as messages:
        model = trained_model(old_cfg)
    for key in ('channels_last', 'band_rows', 'fused_branches'):
        assert sum(f'adapter_cfg.{key}=' in m and 'runtime option' in m
                   for m in messages) == 1, key
    assert all(a.with_cp is True for _, a in adapter_modules(model.backbone))
    method = dict(rank=128, groups=4, kernel_sizes=[3, 5, 7], with_cp=True)
    path = str(tmp_path / 'adapter.safetensors')
    assert save_adapter_file(model, path, cfg=old_cfg).adapter_cfg == method
    tensors, meta = read_adapter_file(path)
    raw = dict(meta.to_metadata(),  # as an older writer wrote it
               adapter_cfg=json.dumps(dict(method, **legacy)))
    old_file = str(tmp_path / 'old.safetensors')
    save_file(tensors, old_file, metadata=raw)
    fresh = MODELS.build(cfg.model)
    assert apply_adapter_file(fresh, old_file).adapter_cfg == method
    assert_same_predictions(model, fresh.eval())


def _other_base(cfg, tmp_path, key='layer2.0.conv1.weight'):
    """``cfg``'s base checkpoint with one element of ``key`` changed, under
    the same file name in another folder."""
    base = cfg.model.backbone.init_cfg.checkpoint
    state = torch.load(base, weights_only=True)
    state[key] = state[key].clone()
    state[key].view(-1)[7] += 1e-3
    other = tmp_path / 'other' / osp.basename(base)
    other.parent.mkdir()
    torch.save(state, other)
    return str(other)


def test_adapter_file_is_bound_to_its_base_by_content(tmp_path):
    """A file loads onto its base's weights under any name or folder; onto
    other weights it is refused, naming both bases, the first differing
    tensor and the fix, unless explicitly allowed (with a warning)."""
    from helpers import logged_messages
    from mslora_mm.adapters.adapter_file import frozen_backbone_hashes
    cfg = make_cfg('r50', tmp_path)
    model = trained_model(cfg)
    path = str(tmp_path / 'adapter.safetensors')
    base = cfg.model.backbone.init_cfg.checkpoint
    save_adapter_file(model, path, cfg=cfg)
    meta = read_adapter_file(path)[1]
    hashes = frozen_backbone_hashes(model)
    assert meta.base_tensors == hashes
    assert 'backbone.layer2.0.conv1.weight' in hashes
    assert not [k for k in hashes if is_adapter_key(k)]
    assert len(meta.base_fingerprint) == 64

    renamed = tmp_path / 'copies' / 'renamed.pth'  # same weights, new name
    renamed.parent.mkdir()
    shutil.copy(base, renamed)
    same = copy.deepcopy(cfg)
    same.model.backbone.init_cfg.checkpoint = str(renamed)
    fresh = MODELS.build(same.model)
    with logged_messages() as messages:
        apply_adapter_file(fresh, path)
    assert not [m for m in messages if 'adapter.safetensors' in m]
    assert_same_predictions(model, fresh.eval())

    other = copy.deepcopy(cfg)
    other.model.backbone.init_cfg.checkpoint = _other_base(cfg, tmp_path)
    expected = (
        f'adapter.safetensors was trained on the frozen backbone of '
        f'{re.escape(base)} .*from '
        f'{re.escape(other.model.backbone.init_cfg.checkpoint)}.* 1 of '
        r'\d+ tensors differ, first backbone\.layer2\.0\.conv1\.weight\. '
        r'Evaluate it on its base: --cfg-options '
        f'model\\.backbone\\.init_cfg\\.checkpoint={re.escape(base)}; or.*'
        '--allow-other-base')
    with pytest.raises(AdapterFileError, match=expected):
        apply_adapter_file(MODELS.build(other.model), path)
    onto = MODELS.build(other.model)
    onto.init_weights()
    with pytest.raises(AdapterFileError, match='first backbone.layer2.0.conv1'):
        load_adapter_file(onto, path)
    untouched = {k: v.clone() for k, v in onto.state_dict().items()}
    for k, v in onto.state_dict().items():  # nothing loaded when refused
        assert torch.equal(v, untouched[k]), k

    with logged_messages() as messages:
        load_adapter_file(onto, path, allow_other_base=True)
    warned = [m for m in messages if 'loading anyway' in m]
    assert len(warned) == 1 and 'backbone.layer2.0.conv1.weight' in warned[0]
    tensors = read_adapter_file(path)[0]
    for k, v in tensors.items():
        assert torch.equal(onto.state_dict()[k], v), k


def test_files_without_a_fingerprint_load_with_one_line(tmp_path):
    """A file written before fingerprints (format v2) loads onto any base
    with one logged line saying its base cannot be checked."""
    cfg = make_cfg('r50', tmp_path)
    model = trained_model(cfg)
    path = str(tmp_path / 'adapter.safetensors')
    save_adapter_file(model, path, cfg=cfg)
    tensors, meta = read_adapter_file(path)
    raw = {k: v for k, v in meta.to_metadata().items()
           if k not in ('base_fingerprint', 'base_tensors')}
    raw['format'] = '"mslora-mm/adapter-v2"'
    old = str(tmp_path / 'old.safetensors')
    save_file(tensors, old, metadata=raw)
    other = copy.deepcopy(cfg)
    other.model.backbone.init_cfg.checkpoint = _other_base(cfg, tmp_path)
    from helpers import logged_messages
    fresh = MODELS.build(other.model)
    with logged_messages() as messages:
        assert apply_adapter_file(fresh, old).base_fingerprint is None
    lines = [m for m in messages if 'old.safetensors' in m]
    assert len(lines) == 1 and '\n' not in lines[0]
    assert 'its frozen backbone cannot be checked' in lines[0]
    for k, v in tensors.items():
        assert torch.equal(fresh.state_dict()[k], v), k
