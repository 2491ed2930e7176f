"""One log call for the core: mmengine's current logger where mmengine is
installed (the run's log file), Python's ``logging`` elsewhere."""
import logging


def log(message: str, level: int = logging.INFO) -> None:
    """Log ``message`` at ``level``."""
    try:
        from mmengine.logging import print_log
    except ImportError:
        logging.getLogger('mslora_mm').log(level, message)
        return
    print_log(message, logger='current', level=level)
