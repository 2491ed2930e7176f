from setuptools import find_packages, setup


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


setup(
    name='mslora-mm',
    version=read_version(),
    description='MSLoRA (multi-scale low-rank adaptation by attention '
    'reweighting) for mmdetection',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mslora_mm', 'mslora_mm.*']),
    python_requires='>=3.8',
    # torch and the matching torchvision are installed first, by the user
    # (CPU or CUDA build); < 2.14 because mmcv 2.1.0 does not build there.
    install_requires=read_requirements('requirements/runtime.txt') +
    ['torch>=2.0,<2.14', 'mmcv>=2.0.0rc4,<2.2.0'],
    extras_require={'tests': read_requirements('requirements/tests.txt')},
    license='Apache License 2.0',
    zip_safe=False)
