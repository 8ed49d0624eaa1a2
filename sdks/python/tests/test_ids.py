import re
import threading
import uuid

from tally.ids import _Uuid7Generator, new_event_id, new_span_id, new_trace_id, uuid7, uuid7_time_ms


def test_version_and_variant_bits():
    for _ in range(1000):
        value = uuid7()
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert (value.int >> 76) & 0xF == 7
        assert (value.int >> 62) & 0b11 == 0b10


def test_the_timestamp_is_the_clock_in_milliseconds():
    clock = [1_763_800_000_123]
    generate = _Uuid7Generator(clock_ms=lambda: clock[0])
    assert uuid7_time_ms(generate()) == 1_763_800_000_123
    clock[0] += 5
    assert uuid7_time_ms(generate()) == 1_763_800_000_128


def test_ids_sort_in_the_order_they_were_made():
    ids = [str(uuid7()) for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_a_stuck_clock_and_a_full_counter_still_give_increasing_ids():
    all_ones = lambda n: b"\xff" * n  # noqa: E731 - worst case: the counter starts as high as it can
    generate = _Uuid7Generator(clock_ms=lambda: 1_000, random_bytes=all_ones)
    ids = [generate() for _ in range(10_000)]
    assert [v.int for v in ids] == sorted(v.int for v in ids)
    assert len(set(ids)) == len(ids)
    assert uuid7_time_ms(ids[-1]) > 1_000  # carried forward when the 12-bit counter ran out


def test_a_clock_going_backwards_does_not_reorder_ids():
    clock = [5_000]
    generate = _Uuid7Generator(clock_ms=lambda: clock[0])
    first = generate()
    clock[0] = 4_000
    second = generate()
    assert second.int > first.int


def test_ids_are_unique_across_threads():
    results = []
    lock = threading.Lock()

    def work():
        mine = [new_event_id() for _ in range(2000)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 16_000


def test_trace_and_span_ids_are_w3c_shaped():
    assert re.fullmatch(r"[0-9a-f]{32}", new_trace_id())
    assert re.fullmatch(r"[0-9a-f]{16}", new_span_id())
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", new_event_id())
