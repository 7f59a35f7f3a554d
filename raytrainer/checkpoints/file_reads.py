"""Reading a file's bytes straight into a tensor's memory, however large the tensor."""

import os


def read_into(fd: int, offset: int, target: memoryview) -> int:
    """Fill ``target`` (a byte view) from ``fd`` starting at ``offset``; returns the number of bytes
    read, fewer only when the file ends first. One read returns at most about 2 GiB on Linux (and
    less from some file systems), so a large tensor takes several."""
    done, total = 0, len(target)
    while done < total:
        count = _pread_into(fd, target[done:], offset + done)
        if count == 0:
            break
        done += count
    return done


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):  # no seek, no copy
        return os.preadv(fd, [view], offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - platforms without preadv
    data = os.read(fd, len(view))
    view[:len(data)] = data
    return len(data)
