# The demo's setting as an experiment: Mask R-CNN on the frozen ImageNet
# EfficientNet-Lite0 + MSLoRA on the embedded shapes data (drawn shapes on
# noise: a real domain shift from ImageNet; tools/demo.py generates it),
# evaluated every 2 epochs for the curves.
#   python tools/analysis/compare_tuning.py \
#       configs/experiments/mask_rcnn_efficientnet-lite0_mslora_shapes.py \
#       --seeds 2
_base_ = '../demo/mask_rcnn_efficientnet-lite0_mslora_demo.py'
train_cfg = dict(val_interval=2)
