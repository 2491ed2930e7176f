from .efficientnet_lite import EfficientNetLite
from .resnet import (MSLoRAResNet, MSLoRAResNetMixin, MSLoRAResNetV1d,
                     MSLoRAResNeXt, register_mslora_resnet)
from .swin import MSLoRASwin
from .seg import SEG_PRESETS, seg_preset

__all__ = [
    'EfficientNetLite', 'MSLoRAResNet', 'MSLoRAResNetV1d', 'MSLoRAResNeXt',
    'MSLoRAResNetMixin', 'MSLoRASwin', 'register_mslora_resnet',
    'SEG_PRESETS', 'seg_preset'
]
