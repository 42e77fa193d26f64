"""The overlapped folder loop: errors land on their own item, reads stay one ahead, writes one behind."""

import threading

from mood_vqad.overlap import overlapped


class Pipeline:
    """A read, compute and write that fail on chosen items and record what was in memory at once."""

    def __init__(self, fail_read=(), fail_compute=(), fail_write=()):
        self.fail = {"read": set(fail_read), "compute": set(fail_compute), "write": set(fail_write)}
        self.lock = threading.Lock()
        self.held = 0  # items read whose result is not yet written (or dropped)
        self.most_held = 0
        self.threads = set()
        self.written = []
        self.reads = 0

    def _check(self, stage, item):
        self.threads.add((stage, threading.current_thread().name))
        if item in self.fail[stage]:
            with self.lock:
                self.held -= 1
            raise OSError(f"{stage} of {item} failed")

    def read(self, item):
        with self.lock:
            self.held += 1
            self.reads += 1
            self.most_held = max(self.most_held, self.held)
        self._check("read", item)
        return item * 10

    def compute(self, item, loaded):
        self._check("compute", item)
        return lambda: self.write(item, loaded + 1)

    def write(self, item, value):
        self._check("write", item)
        self.written.append(value)
        with self.lock:
            self.held -= 1


def run(pipeline, items):
    """Run every step as predict_folder does; returns the errors, item: message, in the order they came."""
    errors = []
    for item, step in overlapped(items, pipeline.read, pipeline.compute):
        try:
            step()
        except OSError as exc:
            errors.append((item, str(exc)))
    return errors


def test_every_item_is_written_in_order_from_background_threads():
    pipeline = Pipeline()
    assert run(pipeline, range(6)) == []
    assert pipeline.written == [i * 10 + 1 for i in range(6)]
    names = {stage: name for stage, name in pipeline.threads}
    assert names["read"].startswith("read-ahead") and names["write"].startswith("write-behind")
    assert names["compute"] == threading.main_thread().name
    assert pipeline.most_held <= 3  # the one computing, one read ahead, one being written


def test_errors_are_raised_on_the_step_of_their_own_item_and_the_rest_go_on():
    pipeline = Pipeline(fail_read=[1], fail_compute=[3], fail_write=[4])
    errors = run(pipeline, range(6))
    assert errors == [(1, "read of 1 failed"), (3, "compute of 3 failed"), (4, "write of 4 failed")]
    assert pipeline.written == [1, 21, 51]


def test_leaving_the_loop_early_cancels_reads_and_finishes_the_write_in_flight():
    pipeline = Pipeline()
    steps = overlapped(range(100), pipeline.read, pipeline.compute)
    for _, (_, step) in zip(range(3), steps, strict=False):  # compute 0, compute 1, wait for write 0
        step()
    steps.close()
    assert pipeline.written == [1]  # item 1's write was never started: its compute step's write is dropped
    assert pipeline.most_held <= 3 and pipeline.reads <= 3  # 0, 1 and at most 2 (ahead of 1) of 100
