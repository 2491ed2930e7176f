from .amp import CPUAmpOptimWrapper, enable_amp
from .constructor import MSLoRAOptimWrapperConstructor

__all__ = ['CPUAmpOptimWrapper', 'enable_amp', 'MSLoRAOptimWrapperConstructor']
