"""Test-only hooks for the end-to-end tests (imported by test configs)."""
import os
import signal

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdet.registry import HOOKS


@HOOKS.register_module()
class RankDumpHook(Hook):
    """Every rank saves its adapter weights after training."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        state = {k: v.detach().clone() for k, v in model.state_dict().items()
                 if '.mslora.' in k}
        os.makedirs(self.out_dir, exist_ok=True)
        torch.save(state, os.path.join(self.out_dir, f'rank{get_rank()}.pth'))


@HOOKS.register_module()
class KillAtIterHook(Hook):
    """SIGKILL the process (no clean-up) when iteration ``at`` starts."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class TrainStartStateHook(Hook):
    """Save the optimizer and scheduler state as training (re)starts."""

    def __init__(self, out_file: str) -> None:
        self.out_file = out_file

    def before_train(self, runner) -> None:
        torch.save(
            dict(iter=runner.iter,
                 optimizer=runner.optim_wrapper.state_dict(),
                 param_schedulers=[s.state_dict()
                                   for s in runner.param_schedulers]),
            self.out_file)


@HOOKS.register_module()
class CompiledFramesHook(Hook):
    """After training, print how many frames dynamo compiled and how many
    graphs it made (a silent fallback to eager leaves both at 0)."""

    def after_train(self, runner) -> None:
        from torch._dynamo.utils import counters
        print(f'COMPILED frames_ok={counters["frames"]["ok"]} '
              f'graphs={counters["stats"]["unique_graphs"]}', flush=True)
