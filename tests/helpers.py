"""Shared paths, small detectors, fake batches, configs and the tool runner
of the tests."""
import contextlib
import copy
import logging
import os
import os.path as osp
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import torch
import torch.nn as nn
from mmengine.hub import get_config

from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.models.backbones.swin import WindowMSA
from mslora_mm import (FrozenBatchNorm2d, FrozenConv2d, FrozenLinear,
                       FrozenWindowMSA, MaskReLU)
from mslora_mm.core import runtime


#: the repository root, and the shared data the tests read
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHARED_DATA = osp.join(osp.dirname(ROOT), 'shared', 'data')
MINICOCO = osp.join(SHARED_DATA, 'minicoco')


def free_port() -> int:
    """A TCP port nothing listens on now (for a gloo group or torchrun)."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def in_ci() -> bool:
    """Whether this run is CI's (``CI`` set to true/1/yes; ``CI=false`` is
    not)."""
    return os.environ.get('CI', '').strip().lower() in ('true', '1', 'yes')


def shared_data(name: str) -> str:
    """The path of ``../shared/data/<name>``; missing, the test skips, or
    fails under CI (a missing input must not pass CI by skipping)."""
    path = osp.join(SHARED_DATA, name)
    if not osp.isdir(path):
        import pytest
        message = f'{name} not found at {path}'
        if in_ci():
            pytest.fail(f'{message}: CI needs the shared data folder')
        pytest.skip(message)
    return path

#: tolerance for float32 outputs compared with values computed on another
#: machine: PyTorch's CPU kernels take other instruction paths (AVX2,
#: AVX-512, none) there and sum in other orders; through the tens of layers
#: of a backbone that moves results by a few float32 ulps of their scale
#: (measured: 1e-7 to 1.4e-6). Formats, keys and shapes stay exact.
FLOAT32_ACROSS_MACHINES = dict(rtol=1e-4, atol=1e-5)

#: each activation-free frozen layer and the stock layer it stands for
STOCK = {FrozenConv2d: nn.Conv2d, FrozenLinear: nn.Linear,
         FrozenBatchNorm2d: nn.BatchNorm2d, MaskReLU: nn.ReLU,
         FrozenWindowMSA: WindowMSA}


def randomize(module: nn.Module, seed: int = 0) -> None:
    """Every parameter of ``module`` random (std 0.2), reproducibly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def assert_same_outputs_and_gradients(
        ref: nn.Module, other: nn.Module, x: torch.Tensor, hw: dict,
        settings: Optional[dict] = None,
        record=contextlib.nullcontext()) -> None:
    """``other`` under the runtime ``settings`` computes what ``ref`` does
    with PyTorch's stock layers (``runtime.STOCK``): outputs, input and
    parameter gradients (``other``'s forward runs inside ``record``; the
    two may be one module)."""
    def run(module, chosen, context, g=None):
        xi = x.clone().requires_grad_()
        params = list(module.parameters())
        with runtime.runtime(**chosen):  # with_cp recomputes in backward
            with context:
                out = module(xi, **hw)
            g = torch.randn_like(out) if g is None else g
            grads = torch.autograd.grad(out, [xi] + params, g,
                                        allow_unused=True)
        return out, g, grads

    out_o, g, grads_o = run(other, dict(runtime.STOCK, **(settings or {})),
                            record)
    out_r, _, grads_r = run(ref, runtime.STOCK, contextlib.nullcontext(), g)
    torch.testing.assert_close(out_o, out_r, rtol=1e-5, atol=1e-5)
    names = ['input'] + [n for n, _ in ref.named_parameters()]
    for name, go, gr in zip(names, grads_o, grads_r):
        torch.testing.assert_close(go, gr, rtol=1e-4, atol=1e-5, msg=name)


def to_stock(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every frozen layer back to the stock class
    (the autograd PyTorch would use)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if type(m) in STOCK:  # the subclass it was made from, if any
            m.__class__ = getattr(m, 'stock_type', STOCK[type(m)])
    return model


def randomise_batchnorms(model: nn.Module, seed: int = 1) -> None:
    """Give every BatchNorm2d (frozen or not) of ``model`` non-trivial
    statistics and affine parameters, as a pretrained backbone has."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)


def mask_rcnn_cfg(backbone: dict, in_channels=(64, 128, 256, 512),
                  num_classes: int = 3) -> dict:
    """mmdet's Mask R-CNN FPN model config with ``backbone`` swapped in."""
    cfg = get_config('mmdet::_base_/models/mask-rcnn_r50_fpn.py').model
    cfg.backbone = backbone
    cfg.neck.in_channels = list(in_channels)
    cfg.roi_head.bbox_head.num_classes = num_classes
    cfg.roi_head.mask_head.num_classes = num_classes
    return copy.deepcopy(cfg)


def build_detector(backbone: dict, **kwargs):
    model = MODELS.build(mask_rcnn_cfg(backbone, **kwargs))
    model.init_weights()
    return model


def fake_batch(model, batch_size=2, size=96, num_classes=3, seed=0):
    torch.manual_seed(seed)
    packed = demo_mm_inputs(batch_size, [[3, size, size]] * batch_size,
                            num_items=[3] * batch_size,
                            num_classes=num_classes, with_mask=True)
    return model.data_preprocessor(packed, True)


def minicoco_config(tmp_path, minicoco: str, max_iters: int = 2,
                    extra: str = '') -> str:
    """Write a small CPU config (R-18 MSLoRA Mask R-CNN, 128 px, iteration
    based) on the shared minicoco data; returns its path."""
    text = f"""
_base_ = '{ROOT}/configs/demo/mask_rcnn_r50_mslora_demo.py'
data_root = '{minicoco}/'
metainfo = dict(classes=('person', 'car', 'airplane'))
model = dict(
    backbone=dict(depth=18, adapter_cfg=dict(rank=32)),
    neck=dict(in_channels=[64, 128, 256, 512]))
train_dataloader = dict(batch_size=2, dataset=dict(
    data_root=data_root, metainfo=metainfo,
    ann_file='annotations/instances_train.json',
    data_prefix=dict(img='images/')))
val_dataloader = dict(batch_size=2, dataset=dict(
    data_root=data_root, metainfo=metainfo,
    ann_file='annotations/instances_val.json',
    data_prefix=dict(img='images/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop',
                 max_iters={max_iters}, val_interval=1000)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                        begin=0, end=4)]
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval=2, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
{extra}
"""
    path = tmp_path / 'minicoco_cfg.py'
    path.write_text(text)
    return str(path)


def hymenoptera_config(tmp_path, base: str, data_root: str,
                       max_iters: int = 2, backbone: dict = None,
                       adapters: dict = None, head: dict = None) -> str:
    """A tiny CPU run of a Food-101 classification config on the shared
    hymenoptera folders (2 classes, 64 px, iteration based, no pretrained
    download; ``backbone``: the wrapped body's settings, ``adapters``: the
    MSLoRA wrapper's, ``head``: the head's); returns its path."""
    text = f"""
_base_ = '{ROOT}/{base}'
model = dict(data_preprocessor=dict(num_classes=2),
             head=dict(num_classes=2, topk=(1, ), **{head or {}!r}),
             backbone=dict(backbone={dict(backbone or {}, init_cfg=None)!r},
                           **{adapters or {}!r}))
dataset = dict(type='CustomDataset', data_root='{data_root}',
               _delete_=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, backend='pillow'),
    dict(type='PackInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=72, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs')]
train_dataloader = dict(batch_size=4, num_workers=0, dataset=dict(
    dataset, data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(batch_size=8, num_workers=0, dataset=dict(
    dataset, data_prefix='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 2))
test_evaluator = val_evaluator
train_cfg = dict(_delete_=True, by_epoch=False, max_iters={max_iters},
                 val_interval=1000)
param_scheduler = []
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval={max_iters}))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
"""
    path = tmp_path / 'hymenoptera_cfg.py'
    path.write_text(text)
    return str(path)


def coco_metrics(out: str) -> str:
    """The last COCO metrics line of a tool's output, from the box mAP."""
    line = [ln for ln in out.splitlines() if 'coco/bbox_mAP:' in ln][-1]
    return line[line.index('coco/bbox_mAP:'):].split('data_time')[0]


#: the running test's own limit (pytest-timeout's, set per test by
#: tests/conftest.py): a tool is killed before it, so its output is kept
TEST_TIMEOUT = 1200.0


def run_tool(*args: str, ok: Optional[bool] = True, cwd: Optional[str] = None,
             env: Optional[dict] = None, timeout: int = 900,
             stdout_only: bool = False) -> str:
    """Run ``args`` (a ``.py`` script first: with this Python) in the repo
    root; its output (stdout and stderr, or stdout alone). ``ok=True``
    asserts success, ``False`` failure, ``None`` neither. Past ``timeout``
    (at most the test's own limit less 30 s) its whole process group
    (torchrun's ranks and dataloader workers included) gets SIGABRT, which
    makes Python print where each process was (``PYTHONFAULTHANDLER``),
    then SIGKILL, and the test fails with that output."""
    import signal
    command = [sys.executable, *args] if args[0].endswith('.py') \
        else list(args)
    limit = min(timeout, TEST_TIMEOUT - 30)
    env = dict(os.environ if env is None else env, PYTHONFAULTHANDLER='1')
    proc = subprocess.Popen(command, cwd=cwd or ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGABRT)
        try:  # its output so far, and the tracebacks
            stdout, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # children may hang on
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(
            f'{" ".join(command)} ran past {limit:.0f} s; its process group '
            f'was killed (where it was: the tracebacks below):\n'
            f'{(stdout + stderr)[-6000:]}') from None
    out = stdout if stdout_only else stdout + stderr
    if ok is not None:
        assert (proc.returncode == 0) == ok, (stdout + stderr)[-4000:]
    return out


@contextlib.contextmanager
def logged_messages() -> Iterator[List[str]]:
    """The messages mmengine's current logger emits inside the block."""
    from mmengine.logging import MMLogger
    messages: List[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def optimised_names(model: nn.Module, optim) -> set:
    """Names of ``model``'s parameters that ``optim`` updates."""
    held = {id(p) for g in optim.param_groups for p in g['params']}
    return {n for n, p in model.named_parameters() if id(p) in held}


def assert_gradients_on_trainable_only(model: nn.Module) -> None:
    """After a backward: every trainable parameter of ``model`` got a
    non-zero gradient, no frozen one got any."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def trainable_after_init_and_train(model: nn.Module) -> set:
    """The trainable parameter names, asserted unchanged by ``train()``
    (DDP registers them right after ``__init__``)."""
    at_init = {n for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    assert at_init == {n for n, p in model.named_parameters()
                       if p.requires_grad}
    return at_init


def made_once(root: Path, make: Callable[[Path], dict]) -> dict:
    """``make(root)``'s result (a JSON-able dict), made once for all the
    test processes of a run: under the file lock ``<root>.lock`` the result
    kept in ``<root>/done.json`` is read; without it, whatever an earlier,
    failed try left in ``root`` is removed and ``make`` fills a fresh
    ``root``; its result is written last, atomically, as ``done.json``."""
    import json
    import shutil
    from filelock import FileLock
    with FileLock(f'{root}.lock'):
        done = root / 'done.json'
        if done.is_file():
            return json.loads(done.read_text())
        if root.exists():  # half-made by a try that failed
            shutil.rmtree(root)
        root.mkdir(parents=True)
        made = make(root)
        partial = root / 'done.json.partial'
        partial.write_text(json.dumps(made))
        os.replace(partial, done)
        return made
