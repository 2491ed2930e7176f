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


#: how mmengine's ``load_state_dict`` opens its warning, and its line of
#: missing keys
MISMATCH = 'The model and loaded state dict do not match exactly'
MISSING = 'missing keys in source state_dict: '


class AdapterKeysFilter(logging.Filter):
    """Takes the adapter parameters out of mmengine's "missing keys"
    warning (a pretrained checkpoint of the plain backbone has none of them,
    as intended) and counts them in ``count``; the warning stays for every
    other key, and goes when no other key is left."""

    def __init__(self, is_adapter_key) -> None:
        super().__init__()
        self.is_adapter_key = is_adapter_key
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if not text.startswith(MISMATCH):
            return True
        lines = []
        for line in text.split('\n'):
            if line.startswith(MISSING):
                keys = [k for k in line[len(MISSING):].split(', ') if k]
                rest = [k for k in keys if not self.is_adapter_key(k)]
                self.count += len(keys) - len(rest)
                line = MISSING + ', '.join(rest) if rest else ''
            lines.append(line)
        if not any(line.strip() for line in lines[1:]):
            return False
        record.msg, record.args = '\n'.join(lines), ()
        return True
