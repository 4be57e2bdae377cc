import collections
import os
import pickle

import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub


def test_mmengines_own_buffer_loads_weights_only_and_its_getattr_reaches_only_the_statistics(tmp_path):
    """mmengine pickles a buffer's statistics table as builtins.getattr(HistoryBuffer, 'min') etc.: such a file
    loads weights-only, as a checked buffer, and HistoryBuffer itself is mmengine's, unchanged by importing pit_det."""
    import pit_det  # noqa: F401
    from pit_det.checkpoint.serialization import CheckedHistoryBuffer

    assert HistoryBuffer.__setstate__.__module__ == HistoryBuffer.__getstate__.__module__ == HistoryBuffer.__module__
    buffer = HistoryBuffer()
    for v in (1.0, 3.0, 2.0):
        buffer.update(v)
    assert b'getattr' in pickle.dumps(buffer, protocol=2)  # what every mmengine checkpoint holds
    torch.save({'buffer': buffer}, tmp_path / 'hub.pth')
    restored = torch.load(tmp_path / 'hub.pth', weights_only=True)['buffer']
    assert type(restored) is CheckedHistoryBuffer and isinstance(restored, HistoryBuffer)
    assert restored.statistics('mean') == 2.0 and restored.statistics('max') == 3.0
    again = pickle.dumps(restored, protocol=2)  # saved again as mmengine's class, loadable without pit_det
    assert b'pit_det' not in again and b'mmengine.logging.history_buffer' in again
    assert pickle.loads(again).statistics('min') == 1.0


class _Getattr:
    """Pickles as builtins.getattr(owner, name)."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return (getattr, (self.owner, self.name))


@pytest.mark.parametrize(
    ('owner', 'name'),
    [(HistoryBuffer, '_statistics_methods'), (HistoryBuffer, 'update'), (collections.Counter, 'fromkeys')],
)
def test_getattr_of_anything_but_a_statistics_method_is_refused(owner, name, tmp_path):
    torch.save({'x': _Getattr(owner, name)}, tmp_path / 'crafted.pth')
    with pytest.raises(pickle.UnpicklingError, match=f"getattr\\({owner.__name__}, '{name}'\\).*only HistoryBuffer"):
        torch.load(tmp_path / 'crafted.pth', weights_only=True)


def test_mmengine_style_checkpoint_round_trip_weights_only(tmp_path):
    hub = MessageHub.get_instance('pit_det_test')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/lr', 1e-4)
    hub.update_info('iter', 3)
    model = torch.nn.Linear(3, 2)
    optim = torch.optim.AdamW(model.parameters())
    model(torch.rand(1, 3)).sum().backward()
    optim.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optim, milestones=[40])
    checkpoint = dict(
        meta=dict(epoch=1, iter=3, message_hub=hub.state_dict(), dataset_meta=dict(classes=('a',))),
        state_dict=model.state_dict(),
        optimizer=optim.state_dict(),
        param_schedulers=[scheduler.state_dict()],
    )
    path = tmp_path / 'epoch_1.pth'
    torch.save(checkpoint, path)
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:  # without pit_det's allow-list this is mmengine's failure under torch >= 2.6
        with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
            torch.load(path, weights_only=True)
    finally:
        torch.serialization.add_safe_globals(saved)
    loaded = torch.load(path, weights_only=True)  # what mmengine's torch.load(path) defaults to since torch 2.6
    restored = MessageHub.get_instance('pit_det_test_restored')
    restored.load_state_dict(loaded['meta']['message_hub'])
    assert restored.get_scalar('train/loss').current() == 0.5
    torch.testing.assert_close(loaded['state_dict']['weight'], model.weight)


def test_arbitrary_callable_is_still_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ('echo pwned',))

    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match='system'):
        torch.load(path, weights_only=True)
    assert os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD') is None


class _CraftedBuffer:
    """Pickles as a HistoryBuffer whose state carries a statistics table of allow-listed callables."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return (HistoryBuffer, (), self.state)


def test_crafted_buffer_cannot_change_the_class_table(tmp_path):
    import _codecs
    import collections

    import numpy as np

    HistoryBuffer()  # mmengine fills the class's table with its defaults at the first buffer made in the process
    table = dict(HistoryBuffer._statistics_methods)
    assert set(table) == {'min', 'max', 'current', 'mean'}
    state = {
        'max_length': 10,
        '_log_history': np.array([1.0, 3.0]),
        '_count_history': np.array([1, 1]),
        'statistics_methods': {'mean': _codecs.encode, 'evil': collections.Counter},
    }
    path = tmp_path / 'crafted.pth'
    torch.save({'meta': {'message_hub': {'log_scalars': {'train/loss': _CraftedBuffer(state)}}}}, path)
    loaded = torch.load(path, weights_only=True)
    assert HistoryBuffer._statistics_methods == table  # nothing installed, nothing replaced
    buffer = loaded['meta']['message_hub']['log_scalars']['train/loss']
    assert buffer.statistics('mean') == 2.0 and buffer.max_length == 10

    bad = dict(state, _log_history='rm -rf /')
    torch.save({'b': _CraftedBuffer(bad)}, path)
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer state has fields'):
        torch.load(path, weights_only=True)
    assert HistoryBuffer._statistics_methods == table
