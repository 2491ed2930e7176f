"""How tools load configs: mmdet's shared flags, and a config with
``--cfg-options`` merged, for a runner (train/test) or for building a model
(every other tool)."""
import argparse
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.registry import init_default_scope

from .distributed import adapt_cfg_to_device
from .extras import read_config


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """mmdet's shared flags: --work-dir, --cfg-options, --launcher,
    --local-rank."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file.')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank, torchrun sets LOCAL_RANK
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def add_allow_other_base(parser: argparse.ArgumentParser) -> None:
    """``--allow-other-base``: load adapter files onto a frozen backbone
    other than the one they were trained on, with a warning."""
    parser.add_argument(
        '--allow-other-base', action='store_true',
        help='load adapter files even onto a frozen backbone whose weights '
        'differ from the base they were trained on (a warning instead of '
        'an error)')


def runner_config(args: argparse.Namespace) -> Config:
    """Config from ``args.config`` with --cfg-options, launcher and work_dir
    applied (CLI > config > ./work_dirs/<config name>), ready for the
    runner on this machine (gloo and the CPU DDP wrapper without CUDA)."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = read_config(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return adapt_cfg_to_device(cfg)


def load_config(config: str, cfg_options: Optional[dict] = None) -> Config:
    """``config`` with ``cfg_options`` merged, its default scope (mmdet
    unless it says otherwise, e.g. mmpretrain) active."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'config {config} does not exist')
    cfg = read_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('default_scope', 'mmdet') == 'mmdet':
        from mmdet.utils import register_all_modules
        register_all_modules(init_default_scope=False)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return cfg


def show_results(cfg: Config, show: bool, show_dir: Optional[str],
                 wait_time: float) -> Config:
    """``cfg`` with its toolbox's visualization hook drawing test results,
    as that toolbox's ``tools/test.py`` does it: mmdet saves into
    ``work_dir/<timestamp>/show_dir``, mmseg (every image, ground truth
    beside prediction) and mmpretrain into ``show_dir``. Raises
    ``RuntimeError`` naming the fix if the config has no such hook."""
    scope = cfg.get('default_scope', 'mmdet')
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        name = dict(mmseg='SegVisualizationHook',
                    mmpretrain='VisualizationHook').get(
                        scope, 'DetVisualizationHook')
        raise RuntimeError(
            f'--show/--show-dir: {cfg.filename} has no '
            'default_hooks.visualization; add '
            f"default_hooks = dict(visualization=dict(type='{name}'))")
    if scope == 'mmpretrain':
        hook.update(enable=True, show=show, wait_time=wait_time)
        if show_dir:
            hook.out_dir = show_dir
        return cfg
    hook.draw = True
    if show:
        hook.update(show=True, wait_time=wait_time)
    if show_dir and scope == 'mmseg':  # its hook's default: 1 image in 50
        cfg.visualizer.save_dir = show_dir
        hook.interval = 1
    elif show_dir:
        hook.test_out_dir = show_dir
    return cfg


#: what ``--tta`` needs in a config, per toolbox: its own TTA wrapper
TTA_MODELS = dict(mmdet="dict(type='DetTTAModel', tta_cfg=dict(nms=dict("
                  "type='nms', iou_threshold=0.5), max_per_img=100))",
                  mmseg="dict(type='SegTTAModel')",
                  mmpretrain="dict(type='AverageClsScoreTTA')")


def tta_config(cfg: Config) -> Config:
    """``cfg`` testing with test-time augmentation as mmdet's and mmseg's
    ``tools/test.py --tta`` do: the config's ``tta_model`` wrapped around
    its model, its ``tta_pipeline`` as the test pipeline. Raises
    ``ValueError`` naming what the config lacks and an example of it."""
    missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
    if missing:
        scope = cfg.get('default_scope', 'mmdet')
        raise ValueError(
            f'--tta: {cfg.filename} has no {" and no ".join(missing)}. Add '
            f'them as {scope}\'s configs do: tta_model = '
            f'{TTA_MODELS.get(scope, TTA_MODELS["mmdet"])}, and tta_pipeline '
            "= [dict(type='LoadImageFromFile'), dict(type='TestTimeAug', "
            'transforms=[[...resizes...], [flips...], [the packing step of '
            'the test pipeline]])]')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    return cfg


def prediction_output(cfg: Config, out: str):
    """Where ``--out`` puts every test prediction. A ``.pkl``/``.pickle``
    file: the metric that dumps them there, mmdet's ``DumpDetResults``
    (masks RLE-encoded) for mmdet configs, mmengine's ``DumpResults``
    otherwise. A folder, for mmseg configs: as mmseg's ``--out``, each
    ``IoUMetric`` of ``cfg.test_evaluator`` writes a PNG of labels per image
    into it (``cfg`` changed; returns None). Anything else: ``ValueError``.
    """
    scope = cfg.get('default_scope', 'mmdet')
    if out.endswith(('.pkl', '.pickle')):
        if scope == 'mmdet':
            from mmdet.evaluation import DumpDetResults
            return DumpDetResults(out_file_path=out)
        from mmengine.evaluator import DumpResults
        return DumpResults(out_file_path=out)
    if scope != 'mmseg':
        raise ValueError(f'--out {out}: the dump file must end with .pkl or '
                         '.pickle (a folder of predictions is for mmseg '
                         'configs)')
    evaluators = cfg.test_evaluator if isinstance(
        cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
    writers = [e for e in evaluators if e.get('type') in
               ('IoUMetric', 'mmseg.IoUMetric')]
    if not writers:
        raise ValueError(
            f'--out {out}: a folder of predictions is written by mmseg\'s '
            f'IoUMetric, which {cfg.filename}\'s test_evaluator lacks; give '
            'a .pkl file instead')
    for evaluator in writers:
        evaluator.update(output_dir=out, keep_results=True)
    return None
