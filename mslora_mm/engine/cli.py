"""What tools/train.py and tools/test.py share: flags and config loading."""
import argparse
import os
import os.path as osp
from mmengine.config import Config, DictAction

from .distributed import adapt_cfg_to_device


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


def load_config(args: argparse.Namespace) -> Config:
    """Config from ``args.config`` with --cfg-options, launcher and work_dir
    applied (CLI > config > ./work_dirs/<config name>), ready for the
    runner on this machine (gloo and the CPU DDP wrapper without CUDA)."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return adapt_cfg_to_device(cfg)
