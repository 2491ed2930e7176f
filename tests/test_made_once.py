"""``helpers.made_once``, behind the shared trained R-18 fixture: a failed
first try does not fail every later one."""
import json

import pytest

from helpers import made_once


def test_a_failed_first_try_is_made_again_from_a_clean_folder(tmp_path):
    root = tmp_path / 'shared'
    calls = []

    def fails(folder):
        calls.append('fails')
        (folder / 'half.pth').write_text('half-written')
        raise RuntimeError('training failed')

    def works(folder):
        calls.append('works')
        assert list(folder.iterdir()) == []  # the failed try's files gone
        (folder / 'model.pth').write_text('weights')
        return dict(checkpoint=str(folder / 'model.pth'))

    with pytest.raises(RuntimeError, match='training failed'):
        made_once(root, fails)
    assert not (root / 'done.json').exists()
    made = made_once(root, works)
    assert made == dict(checkpoint=str(root / 'model.pth'))
    assert json.loads((root / 'done.json').read_text()) == made
    assert made_once(root, fails) == made  # kept: not made a third time
    assert calls == ['fails', 'works']
    assert sorted(p.name for p in root.iterdir()) == ['done.json',
                                                      'model.pth']
