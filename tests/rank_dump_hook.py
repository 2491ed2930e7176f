"""Test-only hook: every rank saves its adapter weights after training."""
import os

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdet.registry import HOOKS


@HOOKS.register_module()
class RankDumpHook(Hook):

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        state = {k: v.detach().clone() for k, v in model.state_dict().items()
                 if '.mslora.' in k}
        os.makedirs(self.out_dir, exist_ok=True)
        torch.save(state, os.path.join(self.out_dir, f'rank{get_rank()}.pth'))
