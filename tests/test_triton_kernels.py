"""The ``kernel='triton'`` path (``mslora_mm/core/ops/``): its numbers
under Triton's interpreter (``interpreted_triton.py``, in a process of its
own), its kernels compiled for an H100 (sm_90) here, and how the runtime
chooses it."""
import glob
import os
import os.path as osp
import subprocess
import sys
import tempfile

import pytest
import torch

from helpers import ROOT, in_ci, logged_messages, run_tool
from mslora_mm.core import MSLoRA
from mslora_mm.core.runtime import runtime, runtime_option, set_runtime

if not in_ci():  # under CI a missing triton fails the tests
    pytest.importorskip('triton', reason='triton is not installed')


def test_triton_path_matches_the_stock_path_in_the_interpreter():
    """``interpreted_triton.py`` in a pytest process with
    ``TRITON_INTERPRET=1``: outputs, input and parameter gradients against
    PyTorch's layers at edge shapes, fp64 gradcheck, fp16/bf16 bounds,
    unwritten elements, what ``with_cp`` saves, compile and export."""
    out = run_tool(sys.executable, '-m', 'pytest', 'interpreted_triton.py',
                   '-q', '-p', 'no:cacheprovider', '-p', 'no:randomly',
                   '-n', '0', cwd=osp.join(ROOT, 'tests'),
                   env=dict(os.environ, TRITON_INTERPRET='1'))
    assert ' passed' in out and 'skipped' not in out, out


def kernel_resources(fn, signature: dict, constants: dict) -> str:
    """ptxas's resource line of ``fn`` compiled for sm_90a."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from mslora_mm.core.ops.triton_transform import NUM_WARPS
    source = ASTSource(fn=fn, constexprs=constants, signature=dict(
        signature, **dict.fromkeys(constants, 'constexpr')))
    compiled = triton.compile(source, target=GPUTarget('cuda', 90, 32),
                              options=dict(num_warps=NUM_WARPS))
    ptxas = glob.glob(osp.join(osp.dirname(triton.__file__), 'backends',
                               'nvidia', 'bin', 'ptxas'))[0]
    with tempfile.TemporaryDirectory() as tmp:
        with open(osp.join(tmp, 'k.ptx'), 'w') as f:
            f.write(compiled.asm['ptx'])
        info = subprocess.run(
            [ptxas, '-v', '--gpu-name', 'sm_90a', f.name, '-o',
             osp.join(tmp, 'k.cubin')], capture_output=True, text=True,
            check=True).stderr
    return ' '.join(line.strip() for line in info.splitlines()
                    if 'spill' in line or 'registers' in line)


@pytest.mark.parametrize('kernel', ['fwd', 'bwd_ln', 'bwd_dw'])
def test_kernels_compile_for_hopper_without_register_spills(kernel):
    """The real compiler (the interpreter runs plain Python): each kernel
    compiles to sm_90 with fp16 maps and D=128 at the launch's tiles, and
    keeps its values in registers (ptxas reports no spill stores)."""
    from mslora_mm.core.ops import triton_transform as tt
    import triton.language as tl
    dims = dict(H='i32', W='i32', D='i32', stride_p='i32', tiles_w='i32')
    dw = dict(w1='*fp32', w2='*fp32', w3='*fp32')
    rest = dict(b1='*fp32', b2='*fp32', b3='*fp32', ln_w='*fp32',
                ln_b='*fp32')
    radii = dict(R1=1, R2=2, R3=3, RM=3, ACC=tl.float32)
    th, tw = tt._tiling(128, 128, 128)
    fn, signature, constants = {
        'fwd': (tt._transform_fwd_kernel, dict(
            z_ptr='*fp16', out_ptr='*fp16', **dw, **rest, **dims,
            eps='fp32'), dict(radii, TH=th, TW=tw, BLOCK_D=128)),
        'bwd_ln': (tt._transform_bwd_ln_kernel, dict(
            z_ptr='*fp16', da_ptr='*fp16', du_ptr='*fp32', part_ptr='*fp32',
            **dw, **rest, **dims, eps='fp32', plane='i64'),
            dict(radii, BLOCK_D=128, **dict(zip(
                ('TH', 'TW'), tt._tiling(128, 128, 256))))),
        'bwd_dw': (tt._transform_bwd_dw_kernel, dict(
            z_ptr='*fp16', du_ptr='*fp32', dz_ptr='*fp16', part_ptr='*fp32',
            **dw, **dims, plane='i64', taps='i32'),
            dict(radii, BLOCK_C=tt.CHANNEL_BLOCK, **dict(zip(
                ('TH', 'TW'), tt._tiling(128, 128, tt.CHANNEL_BLOCK))))),
    }[kernel]
    info = kernel_resources(fn, signature, constants)
    assert 'Used' in info and ' 0 bytes spill stores' in info, info


def test_triton_on_the_cpu_needs_the_interpreter_and_names_the_site():
    m = MSLoRA(16, rank=8, site='layer1.0')
    x = torch.randn(1, 16, 4, 4)
    assert os.environ.get('TRITON_INTERPRET') != '1'
    with runtime(kernel='triton'), pytest.raises(
            RuntimeError, match="at layer1.0.*kernel='triton'.*"
            'TRITON_INTERPRET=1.*'):
        m(x)


def test_options_outside_the_default_form_keep_the_stock_path():
    """A gated adapter under ``kernel='triton'`` computes with PyTorch's
    layers (no Triton, so no interpreter needed), the reason logged once."""
    m = MSLoRA(16, rank=8, gate=True, site='stage2.1')
    x = torch.randn(1, 16, 5, 5)
    with torch.no_grad(), runtime(kernel='stock'):
        ref = m(x)
    with logged_messages() as messages, torch.no_grad(), \
            runtime(kernel='triton'):
        torch.testing.assert_close(m(x), ref, rtol=0, atol=0)
        m(x)
    said = [s for s in messages if 'stage2.1' in s]
    assert len(said) == 1 and 'gate=True' in said[0], messages


def test_the_kernel_option_and_the_option_it_replaced():
    """``kernel`` takes 'stock'/'native'/'triton'; ``fused_branches``
    (True/False) is read as 'native'/'stock' with a message naming
    ``kernel``; CUDA's default stays 'stock' until a GPU measures
    'triton' faster, the CPU's is 'native'."""
    cuda, cpu = torch.device('cuda'), torch.device('cpu')
    with runtime():
        assert runtime_option('kernel', cpu) == 'native'
        assert runtime_option('kernel', cuda) == 'stock'
        with pytest.raises(ValueError, match="kernel='cuda' must be one of "
                           "\\('stock', 'native', 'triton'\\)"):
            set_runtime(kernel='cuda')
        with logged_messages() as messages:
            set_runtime(fused_branches=False)
            assert runtime_option('kernel', cpu) == 'stock'
            set_runtime(fused_branches=True)
            assert runtime_option('kernel', cuda) == 'native'
        assert any('fused_branches' in s and 'kernel' in s
                   for s in messages), messages
    out = run_tool(sys.executable, '-c', 'import torch; from mslora_mm.core '
                   "import runtime; print(runtime.runtime_option('kernel', "
                   "torch.device('cuda')))", stdout_only=True,
                   env=dict(os.environ, MSLORA_RUNTIME='kernel=triton'))
    assert out.split() == ['triton']
