"""A trained model outside a runner, as tools use it: build it from a config,
give it a full checkpoint or an adapter file, run it on image files."""
import glob
import os.path as osp
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import _load_checkpoint

from .adapters import AdapterFileError, apply_adapter_file
from .cli import load_config

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff',
                    '.webp')


def load_weights(model: nn.Module, weights: str, config: str = 'the config',
                 allow_other_base: bool = False) -> dict:
    """Load a full checkpoint (``.pth``) or an adapter file
    (``.safetensors``: the backbone from ``init_cfg``, then the file) onto
    ``model``; returns the dataset meta the weights carry (the checkpoint's
    ``meta.dataset_meta``, the file's ``classes``), empty if none.
    Raises ``AdapterFileError`` naming both files when they do not fit, or
    when an adapter file's base differs from the model's frozen backbone
    (unless ``allow_other_base``: see ``apply_adapter_file``)."""
    if not osp.isfile(weights):
        raise FileNotFoundError(f'weights {weights} do not exist')
    if weights.endswith('.safetensors'):
        classes = apply_adapter_file(model, weights,
                                     allow_other_base).classes
        return dict(classes=tuple(classes)) if classes else {}
    checkpoint = _load_checkpoint(weights, map_location='cpu')
    state = checkpoint.get('state_dict', checkpoint)
    ours = model.state_dict()
    missing = [k for k in ours if k not in state
               and not k.endswith('num_batches_tracked')]
    shapes = [f'{k}: file {tuple(state[k].shape)} vs model '
              f'{tuple(ours[k].shape)}' for k in ours
              if k in state and state[k].shape != ours[k].shape]
    if missing or shapes:
        problems = shapes + [f'missing {k}' for k in missing]
        raise AdapterFileError(
            f'checkpoint {weights} does not fit the model of {config} '
            f'({len(problems)} problems, e.g. ' + '; '.join(problems[:5]) +
            '). Use the config the checkpoint was trained with.')
    model.load_state_dict(state, strict=False)
    return dict(checkpoint.get('meta', {}).get('dataset_meta') or {})


def default_device() -> str:
    """``'cuda'`` when a GPU is available, else ``'cpu'``."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def init_model(config: str, weights: str, device: Optional[str] = None,
               cfg_options: Optional[dict] = None,
               allow_other_base: bool = False) -> nn.Module:
    """The config's model with ``weights`` loaded, in eval mode on
    ``device`` (default: ``default_device()``); ``model.cfg`` is the config
    and ``model.dataset_meta`` the class names (from the weights, else the
    config's dataset). ``allow_other_base``: as for ``load_weights``."""
    cfg = load_config(config, cfg_options)
    model = MODELS.build(cfg.model)
    meta = load_weights(model, weights, config, allow_other_base)
    model.cfg = cfg
    from_config = dataset_meta(cfg)
    same = tuple(meta.get('classes', ())) == tuple(
        from_config.get('classes', ()))
    # the weights' class names; the config's palette where they agree
    model.dataset_meta = {**from_config, **meta} if same or not meta \
        else meta
    return model.to(device or default_device()).eval()


def init_run(work_dir: str, device: Optional[str] = None) -> nn.Module:
    """The trained model of an mmengine work dir: the config the runner
    dumped there and its ``last_checkpoint``, as ``init_model`` gives it."""
    configs = glob.glob(osp.join(work_dir, '*.py'))
    last = osp.join(work_dir, 'last_checkpoint')
    if len(configs) != 1 or not osp.isfile(last):
        raise FileNotFoundError(
            f'{work_dir} is not a finished training\'s work dir: it needs '
            'the config the runner dumped (one .py) and last_checkpoint; '
            f'found {len(configs)} .py files' +
            ('' if osp.isfile(last) else ' and no last_checkpoint'))
    with open(last) as f:
        checkpoint = f.read().strip()
    if not osp.isfile(checkpoint):  # written relative to another cwd
        checkpoint = osp.join(work_dir, osp.basename(checkpoint))
    return init_model(configs[0], checkpoint, device)


def dataset_meta(cfg: Config) -> dict:
    """Class names (and palette) of the config's test dataset: its
    ``metainfo``, else its dataset class's."""
    from mmengine.registry import DATASETS
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # wrappers (RepeatDataset, ...)
        dataset = dataset.dataset
    meta = dict(dataset.get('metainfo') or {})
    if 'classes' not in meta:
        cls = DATASETS.get(dataset.type)
        meta = dict(getattr(cls, 'METAINFO', {}), **meta)
    return meta


def image_files(inputs: str) -> List[str]:
    """An image file, the images of a folder (sorted) or a glob's matches
    (``**`` recursive); an error naming ``inputs`` when that is nothing."""
    if osp.isdir(inputs):
        files = sorted(f for f in glob.glob(osp.join(inputs, '*'))
                       if f.lower().endswith(IMAGE_EXTENSIONS))
    elif osp.isfile(inputs):
        files = [inputs]
    else:
        files = sorted(glob.glob(inputs, recursive=True))
    if not files:
        raise FileNotFoundError(f'{inputs}: no image file, folder of images '
                                'or glob matching any')
    return files


def input_root(inputs: str) -> str:
    """The folder that ``inputs`` (as ``image_files`` takes it) names its
    images under: the folder itself, a file's folder, or a glob's longest
    leading part without wildcards."""
    if osp.isdir(inputs):
        return inputs
    if osp.isfile(inputs):
        return osp.dirname(inputs)
    fixed = []
    for part in inputs.split(osp.sep)[:-1]:  # the last part names files
        if glob.has_magic(part):
            break
        fixed.append(part)
    return osp.sep.join(fixed) or (osp.sep if inputs.startswith(osp.sep)
                                   else '.')


def output_path(path: str, inputs: str, out_dir: str,
                ext: str = '.png') -> str:
    """Where a tool writes its output for image ``path`` of ``inputs``:
    under ``out_dir`` at the image's path relative to the input root,
    extension ``ext``, so that images of the same name in different
    sub-folders (a glob across folders) keep apart."""
    relative = osp.relpath(path, input_root(inputs))
    return osp.join(out_dir, osp.splitext(relative)[0] + ext)


def readable_image(path: str) -> bool:
    """Whether ``path`` decodes as an image."""
    import mmcv
    try:
        return mmcv.imread(path) is not None
    except Exception:  # mmcv raises bare errors for missing files
        return False


def test_pipeline(cfg: Config) -> Compose:
    """The config's test pipeline without annotation loading."""
    steps = [dict(s) for s in cfg.test_dataloader.dataset.pipeline
             if 'Annotation' not in s['type']]
    return Compose(steps)


def infer(model: nn.Module, files: Sequence[str],
          pipeline: Optional[Compose] = None) -> list:
    """The model's predictions (data samples) for each image file; a
    ``ValueError`` naming a file that cannot be read as an image (other
    errors of the pipeline are raised as they are)."""
    pipeline = pipeline or test_pipeline(model.cfg)
    results = []
    for i, path in enumerate(files):
        try:
            data = pipeline(dict(img_path=path, img_id=i))
        except Exception as e:  # the loaders raise bare errors
            if readable_image(path):
                raise
            raise ValueError(f'{path} cannot be read as an image ({e})'
                             ) from None
        with torch.no_grad():
            results.append(model.test_step(pseudo_collate([data]))[0])
    return results
