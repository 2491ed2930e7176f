"""``mslora_mm.core`` with PyTorch alone: in a process where importing any
mm* package fails, torchvision's ResNet-50 gets MSLoRA on ``layer*.*``:
identity at init, only adapters trainable, the frozen body in eval mode
under ``train()``, gradients reaching every adapter's ``Up``."""
import sys

from helpers import run_tool

#: make every import of an OpenMMLab package fail, as where none is installed
BLOCK_MM = '''
import importlib.abc, sys
class NoOpenMMLab(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmcv', 'mmdet', 'mmengine', 'mmpretrain'):
            raise ImportError(f'{name} is not installed (blocked)', name=name)
sys.meta_path.insert(0, NoOpenMMLab())
'''

SCRIPT = BLOCK_MM + '''
import torch, torchvision
import mslora_mm
from mslora_mm.core import (MSLoRA, adapter_modules, freeze_pretrained,
                            inject_adapters)
try:
    mslora_mm.MSLoRABackbone
except ImportError as e:
    assert 'mslora_mm.core' in str(e), e
else:
    raise AssertionError('the OpenMMLab integration imported without mm*')
torch.manual_seed(0)
model = torchvision.models.resnet50()
for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_(0, 0.5)
        m.running_var.uniform_(0.5, 2.0)
x = torch.randn(2, 3, 64, 64)
with torch.no_grad():
    before = model.eval()(x)
sites = inject_adapters(model, ['layer*.*'], dict(rank=16))
assert len(sites) == 16, sites
freeze_pretrained(model)
model.train()
adapters = dict(adapter_modules(model))
assert len(adapters) == 16
trainable = {n for n, p in model.named_parameters() if p.requires_grad}
assert trainable == {f'{a}.{n}' for a, m in adapters.items()
                     for n, _ in m.named_parameters()}, sorted(trainable)[:4]
for name, m in model.named_modules():
    inside = any(name == a or name.startswith(a + '.') for a in adapters)
    assert m.training == inside, name
with torch.no_grad():
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=2e-4)
model(x).pow(2).mean().backward()
for name, adapter in adapters.items():
    assert adapter.up.weight.grad.abs().sum() > 0, name
assert not [m for m in sys.modules if m.split('.')[0] in (
    'mmcv', 'mmdet', 'mmengine', 'mmpretrain')]
print('core OK', len(sites))
'''


def test_core_adapts_torchvision_resnet50_without_openmmlab():
    assert 'core OK 16' in run_tool(sys.executable, '-c', SCRIPT, timeout=600)


def test_gpu_check_runs_without_openmmlab():
    """The GPU check needs only PyTorch: two of its sections in a process
    where every mm* import fails."""
    script = BLOCK_MM + (
        'import runpy, sys\n'
        "sys.argv = ['gpu_check.py', '--device', 'cpu', '--quick', "
        "'--sections', 'frozen_layers_vs_stock', 'ddp_step']\n"
        "runpy.run_path('tools/analysis/gpu_check.py', run_name='__main__')\n")
    out = run_tool(sys.executable, '-c', script, timeout=600)
    assert 'PASS frozen_layers_vs_stock' in out
    assert 'PASS ddp_step' in out
