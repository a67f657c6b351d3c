"""Every service process freezes its start-up heap (services/common/grpc_server.py)."""

import gc
import weakref

from services.common.grpc_server import _freeze_startup_heap


def test_start_up_objects_leave_the_collectors_reach_and_garbage_is_collected_first():
    class Cycle:
        pass

    kept = Cycle()
    garbage = Cycle()
    garbage.self = garbage
    garbage_alive = weakref.ref(garbage)
    del garbage
    gc.unfreeze()
    try:
        _freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        assert garbage_alive() is None  # frozen garbage would never be freed
        assert not any(thing is kept for thing in gc.get_objects())  # frozen: no full collection walks it
    finally:
        gc.unfreeze()
