"""Training hook that writes adapter files next to the usual checkpoints."""
import os.path as osp
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS  # every scope: mmdet, mmseg, mmpretrain

from .adapter_file import save_adapter_file


@HOOKS.register_module()
class AdapterCheckpointHook(Hook):
    """Save ``{work_dir}/adapter_{epoch|iter}_{n}.safetensors`` every
    ``interval`` epochs (or iterations) and at the end of training.

    Add it beside ``default_hooks.checkpoint`` (which keeps working)::

        custom_hooks = [dict(type='AdapterCheckpointHook', interval=1)]
    """
    priority = 'VERY_LOW'

    def __init__(self, interval: int = 1, by_epoch: bool = True,
                 adapters_only: bool = False,
                 out_dir: Optional[str] = None) -> None:
        self.interval = interval
        self.by_epoch = by_epoch
        self.adapters_only = adapters_only
        self.out_dir = out_dir

    def _save(self, runner, name: str) -> None:
        if not is_main_process():
            return
        meta = getattr(runner.train_dataloader.dataset, 'metainfo', {}) or {}
        save_adapter_file(
            runner.model, osp.join(self.out_dir or runner.work_dir, name),
            cfg=runner.cfg, adapters_only=self.adapters_only,
            classes=meta.get('classes'))

    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and (self.every_n_epochs(runner, self.interval)
                              or self.is_last_train_epoch(runner)):
            self._save(runner, f'adapter_epoch_{runner.epoch + 1}.safetensors')

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if not self.by_epoch and (self.every_n_train_iters(
                runner, self.interval) or self.is_last_train_iter(runner)):
            self._save(runner, f'adapter_iter_{runner.iter + 1}.safetensors')
