"""A folder loop that reads the next item and writes the previous result in background threads.

At most one item is read ahead and one result is being written while the current item computes, so memory
stays bounded (three items' data at most). An error in a background read or write is raised again in the
loop's own thread, in the step of the item it belongs to, so the loop reports it as it would without threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")
Write = Callable[[], None]


def _read_next(
    reader: ThreadPoolExecutor, items: Iterator[Item], read: Callable
) -> tuple[Item, Future] | None:
    for item in items:
        return item, reader.submit(read, item)
    return None


def overlapped(
    items: Iterable[Item], read: Callable[[Item], Loaded], compute: Callable[[Item, Loaded], Write]
) -> Iterator[tuple[Item, Callable[[], None]]]:
    """(item, step) pairs to run in order, each in the caller's try block that reports that item.

    Every item has a compute step: wait for read(item), which ran in the background, and run
    compute(item, loaded), which returns the write of its result. That write runs in the background while
    the next item computes; a later step with the same item waits for it and raises what it raised.
    When the loop ends or is left, reads not yet started are cancelled and the write in flight finishes
    (it must leave no partial file when it fails: io.write_atomic does not).
    """
    with ThreadPoolExecutor(1, "read-ahead") as reader, ThreadPoolExecutor(1, "write-behind") as writer:
        try:
            items = iter(items)
            ahead = _read_next(reader, items, read)
            behind: tuple[Item, Future] | None = None  # the write in flight
            while ahead is not None:
                item, loaded = ahead
                ahead = _read_next(reader, items, read)  # starts as soon as this item's read is done
                written: list[Write] = []

                def step(item: Item = item, loaded: Future = loaded, written: list[Write] = written) -> None:
                    written.append(compute(item, loaded.result()))

                yield item, step
                if behind is not None:
                    yield behind[0], behind[1].result
                    behind = None
                if written:
                    behind = (item, writer.submit(written[0]))
            if behind is not None:
                yield behind[0], behind[1].result
        finally:
            reader.shutdown(wait=True, cancel_futures=True)
