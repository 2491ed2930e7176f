"""Where do the adapters reweight the backbone's features? One figure for one
image: per adapter site, the magnitude of the adapter's change ``‖H(F')‖``
(L2 over channels, per pixel) and the nonlinear branch's map ``T(Pa(F'))``
(mean over channels), resized and overlaid on the image, with colour bars.

    python tools/analysis/reweighting_maps.py CONFIG WEIGHTS IMAGE
        [--out maps.png] [--sites PATTERN ...] [--json stats.json]
        [--cfg-options ...]

IMAGE may be a folder or a glob: its first image in name order is drawn.
By default, one site per stage: the last adapter at each feature resolution.
``--sites`` takes adapter names or fnmatch patterns (``layer3.*``). A
freshly initialised adapter is the identity, so its ``‖H‖`` map is zero.
``--json`` writes per site the mean/max of ``‖H(F')‖ / ‖F‖`` and of
``‖H(F')‖``.
"""
import argparse
import json

import mmcv
from mmengine.config import DictAction

from mslora_mm.apis import image_files, init_model
from mslora_mm.visualization import (adapter_maps, choose_sites,
                                     draw_reweighting_maps, site_statistics)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('weights', help='full checkpoint (.pth) or adapter '
                        'file (.safetensors)')
    parser.add_argument('image', help='an image (of a folder or a glob: '
                        'the first in name order)')
    parser.add_argument('--out', default='reweighting_maps.png')
    parser.add_argument('--sites', nargs='+',
                        help='adapter names or patterns (default: the last '
                        'adapter of each resolution)')
    parser.add_argument('--json', help='write per-site statistics here')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def main():
    args = parse_args()
    images = image_files(args.image)
    image = images[0]
    if len(images) > 1:
        print(f'{args.image}: {len(images)} images, drawing the first: '
              f'{image}')
    model = init_model(args.config, args.weights, args.device,
                       args.cfg_options)
    maps = adapter_maps(model, image)
    names = list(maps)
    sites = choose_sites(
        names, {n: tuple(m['feature'].shape[1:]) for n, m in maps.items()},
        args.sites)
    fig = draw_reweighting_maps(mmcv.imread(image, channel_order='rgb'),
                                sites, maps)
    fig.savefig(args.out, dpi=100)
    stats = {site: site_statistics(maps[site]) for site in sites}
    for site, s in stats.items():
        print(f'{site}: ‖H‖/‖F‖ mean {s["delta_ratio_mean"]:.4f} max '
              f'{s["delta_ratio_max"]:.4f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(stats, f, indent=1)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
