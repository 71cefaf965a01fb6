"""bench.producer_latency's accounting: each input event's time split into its stages, each segment event's
end to end, on a trace made up by hand (no broker, no timing)."""

from __future__ import annotations

import numpy as np

from bench.producer_latency import analyse


def test_stages_are_taken_between_the_recorded_instants_of_each_event_and_its_batch():
    # (offset, send, ack) per input event: two events of one batch, a third of the next
    acks = np.array([[0, 100.000, 100.004], [1, 100.010, 100.012], [2, 100.100, 100.101]])
    # (offset, fetched, batch closed, outputs encoded, outbox released) as the child records them
    trace = np.array([[0, 100.020, 100.070, 100.080, 100.150], [1, 100.030, 100.070, 100.080, 100.150],
                      [2, 100.110, 100.160, 100.170, 100.200], [9, 99.0, 99.0, 99.0, 99.0]])
    batches = np.array([[100.080, 100.150], [100.170, 100.200]])  # (emitted_at, released) per batch
    # (arrival, event_time, emitted_at) per segment event; the last one caused by an event of another phase
    arrivals = np.array([[100.160, 100.010, 100.080], [100.230, 100.100, 100.170], [100.5, 99.0, 99.0]])
    got = analyse(acks, trace, batches, arrivals)
    assert got["segment_events"] == 2 and got["events_traced"] == 3
    st = got["stages_ms"]
    assert st["produce"]["max"] == 4.0 and st["fetch"]["max"] == 18.0  # 100.004 -> 100.020 is 16; 100.012 -> 100.030
    assert st["batch_wait"]["max"] == 50.0 and st["processing"]["max"] == 10.0 and st["publish"]["max"] == 70.0
    assert st["delivery"]["max"] == 30.0 and st["delivery"]["p50"] == 20.0  # 100.160 - 100.150, 100.230 - 100.200
    assert got["end_to_end_ms"]["max"] == 150.0 and got["end_to_end_ms"]["p50"] == 140.0
