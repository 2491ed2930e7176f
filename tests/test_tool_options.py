"""The tools' options as mmdet/mmseg users expect them: --tta, --out (a
.pkl, or a folder for segmentation), the Slurm scripts, infer.py's device
and output paths, demo.py's configs, and the image-reading error."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from helpers import ROOT, run_tool, shared_data

CAMVID = 'configs/experiments/fpn_efficientnet-lite0_mslora_camvid.py'
R50 = 'configs/mask_rcnn_r50_mslora_1x.py'
#: mmseg's flip test-time augmentation (its datasets' tta_pipeline, one scale)
TTA_PIPELINE = """
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(240, 180), keep_ratio=True)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])]
"""


def _fake_srun(tmp_path):
    """A ``srun`` on PATH that writes its arguments, one a line, to a file;
    returns (env, that file)."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    log = tmp_path / 'srun_args'
    srun = bin_dir / 'srun'
    srun.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\n')
    srun.chmod(0o755)
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}')
    env.pop('PYTHON', None)
    return env, log


@pytest.mark.parametrize('script, args, expected', [
    ('slurm_train.sh', ['P', 'job', 'CFG.py', 'WORK'],
     ['train.py', 'CFG.py', '--work-dir=WORK']),
    ('slurm_test.sh', ['P', 'job', 'CFG.py', 'CKPT.pth'],
     ['test.py', 'CFG.py', 'CKPT.pth']),
])
def test_slurm_scripts_run_the_tool_with_python(script, args, expected,
                                                 tmp_path):
    """Each Slurm script starts ``$PYTHON -u tools/<tool> ...`` (default
    ``python``) through srun, with the launcher and the extra arguments."""
    env, log = _fake_srun(tmp_path)
    for python in (None, '/opt/conda/envs/mm/bin/python'):
        if python:
            env['PYTHON'] = python
        subprocess.run(['bash', f'tools/{script}', *args, '--tta'], cwd=ROOT,
                       env=env, check=True, capture_output=True)
        argv = log.read_text().split('\n')[:-1]
        assert argv[argv.index('-p') + 1] == 'P'
        start = argv.index(python or 'python')
        assert argv[start + 1] == '-u'
        assert osp.realpath(osp.join(ROOT, argv[start + 2])) == \
            osp.join(ROOT, 'tools', expected[0])
        assert argv[start + 3:] == [*expected[1:], '--launcher=slurm',
                                    '--tta']


def test_tta_wraps_the_model_and_names_what_is_missing(tmp_path):
    """tta_config as mmseg's test.py --tta: the config's tta_model around
    its model, its tta_pipeline for testing; a config without them is
    refused naming the file and the keys (tools/test.py too)."""
    from mslora_mm.cli import tta_config
    config = tmp_path / 'camvid_tta.py'
    config.write_text(f"_base_ = '{osp.join(ROOT, CAMVID)}'\n{TTA_PIPELINE}")
    cfg = Config.fromfile(str(config))
    model = cfg.model.to_dict()
    tta = tta_config(cfg)
    assert tta.model.type == 'SegTTAModel'
    assert tta.model.module.to_dict() == model
    assert tta.test_dataloader.dataset.pipeline[1].type == 'TestTimeAug'
    plain = Config.fromfile(osp.join(ROOT, CAMVID))
    with pytest.raises(ValueError, match=r'--tta: .*fpn_efficientnet-lite0_'
                       r'mslora_camvid.py has no tta_pipeline\. Add them as '
                       r"mmseg's configs do: tta_model = dict\(type="
                       r"'SegTTAModel'\)"):
        tta_config(plain)
    out = run_tool('tools/test.py', R50, 'none.pth', '--tta', ok=False)
    assert 'mask_rcnn_r50_mslora_1x.py has no tta_model and no tta_pipeline'\
        in out and "tta_model = dict(type='DetTTAModel'" in out


def test_out_is_a_pickle_or_a_folder_of_segmentation_predictions(tmp_path):
    """--out: a .pkl dump for every toolbox; a folder for mmseg configs,
    where each IoUMetric writes a PNG of labels per image (as mmseg's
    test.py); a folder for a detection config is refused by name."""
    from mmdet.evaluation import DumpDetResults
    from mmseg.evaluation import IoUMetric
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from mslora_mm.cli import prediction_output
    det = Config.fromfile(osp.join(ROOT, R50))
    assert isinstance(prediction_output(det, str(tmp_path / 'p.pkl')),
                      DumpDetResults)
    with pytest.raises(ValueError, match=r'--out .*preds: the dump file must '
                       r'end with \.pkl or \.pickle \(a folder of predictions '
                       'is for mmseg configs'):
        prediction_output(det, str(tmp_path / 'preds'))
    seg = Config.fromfile(osp.join(ROOT, CAMVID))
    folder = str(tmp_path / 'preds')
    assert prediction_output(seg, folder) is None
    assert seg.test_evaluator.output_dir == folder
    metric = IoUMetric(**{k: v for k, v in seg.test_evaluator.items()
                          if k != 'type'})
    metric.dataset_meta = dict(classes=tuple('abc'))
    labels = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
    sample = SegDataSample(pred_sem_seg=PixelData(data=labels),
                           gt_sem_seg=PixelData(data=labels))
    sample.set_metainfo(dict(img_path='/data/x/frame_7.jpg'))
    metric.process({}, [sample.to_dict()])
    written = np.asarray(Image.open(osp.join(folder, 'frame_7.png')))
    assert (written == labels[0].numpy()).all()


def test_infer_outputs_keep_their_sub_folders(tmp_path):
    """Outputs sit at each image's path relative to the input root: images
    of one name in two folders (a glob across them) do not overwrite."""
    from mslora_mm.apis import image_files, input_root, output_path
    for sub in ('a', 'b/c'):
        (tmp_path / sub).mkdir(parents=True)
        mmcv.imwrite(np.zeros((4, 4, 3), np.uint8),
                     str(tmp_path / sub / 'img.png'))
    pattern = str(tmp_path / '**' / 'img.png')
    files = image_files(pattern)
    assert input_root(pattern) == str(tmp_path)
    outs = [output_path(f, pattern, 'out') for f in files]
    assert outs == ['out/a/img.png', 'out/b/c/img.png']
    folder = str(tmp_path / 'a')
    assert output_path(image_files(folder)[0], folder, 'out') == 'out/img.png'
    one = str(tmp_path / 'b' / 'c' / 'img.png')
    assert output_path(one, one, 'out', '.json') == 'out/img.json'


def test_infer_defaults_to_cuda_when_available(monkeypatch):
    """tools/infer.py --device defaults to cuda where torch sees a GPU, and
    to cpu elsewhere."""
    spec = importlib.util.spec_from_file_location(
        'infer_tool', osp.join(ROOT, 'tools', 'infer.py'))
    argv = ['infer.py', 'img.png', 'cfg.py', 'w.pth']
    for available, device in ((True, 'cuda'), (False, 'cpu')):
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: available)
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
        monkeypatch.setattr(sys, 'argv', argv)
        assert tool.parse_args().device == device


def test_demo_refuses_a_config_outside_the_demo_configs(tmp_path):
    """demo.py --config with another config stops before doing anything,
    naming the demo configs and the tools for other configs."""
    work = tmp_path / 'work'
    out = run_tool('tools/demo.py', '--config', R50, '--work-dir', str(work),
                   ok=False)
    assert f'--config {R50}: the demo runs only its own configs' in out
    assert 'mask_rcnn_r50_mslora_demo.py' in out
    assert 'tools/train.py and tools/test.py' in out
    assert not work.exists()


def test_infer_names_unreadable_images_only(tmp_path):
    """An unreadable image is named as such; any other error of the
    pipeline on a readable image keeps its own message."""
    from mslora_mm.apis import infer, test_pipeline
    from mslora_mm.cli import load_config
    cfg = load_config(osp.join(ROOT, 'configs/demo/mask_rcnn_r50_mslora_demo'
                               '.py'))
    pipeline = test_pipeline(cfg)
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'not an image')
    with pytest.raises(ValueError, match='broken.jpg cannot be read as an '
                       'image'):
        infer(None, [str(broken)], pipeline)

    def needs_boxes(results):
        return results['gt_bboxes']

    pipeline.transforms.insert(1, needs_boxes)
    good = str(tmp_path / 'good.png')
    mmcv.imwrite(np.zeros((8, 8, 3), np.uint8), good)
    with pytest.raises(KeyError, match='gt_bboxes') as error:
        infer(None, [good], pipeline)
    assert 'cannot be read' not in str(error.value)


@pytest.mark.slow
def test_test_tool_tta_and_out_folder_on_a_segmenter(tmp_path):
    """tools/test.py on a CamVid segmenter: --out FOLDER writes a label PNG
    per test image, with and without --tta (mmseg's flip TTA: the runner
    tests the config's SegTTAModel around the model)."""
    from mmseg.registry import MODELS
    from mslora_mm.cli import load_config
    data = shared_data('camvid')
    config = tmp_path / 'camvid_tta.py'
    config.write_text(f"_base_ = '{osp.join(ROOT, CAMVID)}'\n{TTA_PIPELINE}")
    options = ['--cfg-options', 'model.backbone.backbone.init_cfg=None',
               f'test_dataloader.dataset.data_root={data}',
               'test_dataloader.dataset.indices=2',
               'test_dataloader.num_workers=0',
               'test_dataloader.persistent_workers=False']
    cfg = load_config(str(config), {'model.backbone.backbone.init_cfg': None})
    torch.manual_seed(0)
    checkpoint = str(tmp_path / 'random.pth')
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict()},
               checkpoint)
    written = {}
    for name, extra in (('plain', []), ('tta', ['--tta'])):
        out = run_tool('tools/test.py', str(config), checkpoint, '--out',
                       str(tmp_path / name), '--work-dir',
                       str(tmp_path / f'work_{name}'), *extra, *options,
                       timeout=900)
        assert 'mIoU:' in out
        pngs = sorted((tmp_path / name).glob('*.png'))
        assert len(pngs) == 2, pngs
        written[name] = [np.asarray(Image.open(p)) for p in pngs]
        for png in written[name]:
            assert png.shape == (360, 480) and png.max() <= 10
    # the runner's dump of the config it ran: the TTA model around the model
    ran = {name: Config.fromfile(str(tmp_path / f'work_{name}' /
                                     'camvid_tta.py')) for name in written}
    assert ran['tta'].model.type == 'SegTTAModel'
    assert ran['tta'].model.module == ran['plain'].model
    assert ran['tta'].test_dataloader.dataset.pipeline[1].type == \
        'TestTimeAug'
