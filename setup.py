import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

#: what ``mim train/test mslora_mm ...`` finds in the installed package
MIM_FILES = ('tools', 'configs', 'model-index.yml')


def add_mim_extension() -> None:
    """Put ``MIM_FILES`` under ``mslora_mm/.mim`` (as mmdet does): symlinks
    for an editable install, copies for a built one (wheel or sdist)."""
    if {'develop', 'editable_wheel'} & set(sys.argv):
        mode = 'symlink'
    elif {'sdist', 'bdist_wheel'} & set(sys.argv):
        mode = 'copy'
    else:
        return
    root = osp.dirname(osp.abspath(__file__))
    mim = osp.join(root, 'mslora_mm', '.mim')
    os.makedirs(mim, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(root, name), osp.join(mim, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


def read_version() -> str:
    scope: dict = {}
    with open('mslora_mm/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(path: str) -> list:
    with open(path) as f:
        return [
            line.split('#')[0].strip() for line in f
            if line.split('#')[0].strip()
        ]


#: the pip extras beside detection, each from requirements/<extra>.txt
EXTRAS = ('seg', 'cls', 'peers', 'demo')


def extras_require() -> dict:
    """``[seg]``, ``[cls]``, ``[peers]``, ``[demo]``, ``[all]`` (the four)
    and ``[tests]``, each from its requirements file."""
    extras = {name: read_requirements(f'requirements/{name}.txt')
              for name in EXTRAS}
    extras['all'] = [r for name in EXTRAS for r in extras[name]]
    extras['tests'] = read_requirements('requirements/tests.txt')
    return extras


add_mim_extension()
setup(
    name='mslora-mm',
    version=read_version(),
    description='MSLoRA (multi-scale low-rank adaptation by attention '
    'reweighting) for mmdetection, mmsegmentation and mmpretrain',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mslora_mm', 'mslora_mm.*']),
    include_package_data=True,  # mslora_mm/.mim (MANIFEST.in)
    python_requires='>=3.8',
    # ranges, not pins: an existing OpenMMLab environment is kept as it is
    # (the exact tested set: requirements/constraints.txt). torch and the
    # matching torchvision are installed first, by the user (CPU or CUDA
    # build); < 2.14 because mmcv 2.1.0 does not build there.
    install_requires=read_requirements('requirements/runtime.txt') +
    ['torch>=2.4,<2.14', 'mmcv>=2.0.0rc4,<2.2.0'],
    extras_require=extras_require(),
    license='Apache License 2.0',
    zip_safe=False)
