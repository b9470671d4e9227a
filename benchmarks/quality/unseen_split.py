"""The model-quality benchmark's unseen dataset: the RetailRocket sample split into train and test
session files at run time (the sessions that start in the file's last day are the test), for the
``--tuned`` check that the self-tuning generalises to data it was never shaped on.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.quality.config import TEST_HOURS, UNSEEN


def split_retailrocket(data_dir: Path, work: Path) -> tuple[Path, Path]:
    """The RetailRocket sample as (train, test) session files: test = sessions starting in the last day.

    Rows are copied whole (``Time``, ``UserId``, ``Type``, ``ItemId``, ``SessionId``, ``CatId``: the
    ``sessions`` format reads the three it needs and the event type), so views, carts and purchases are
    all steps, as in the worker. Items first seen in the test day stay there: a case whose target the
    model cannot rank counts as a miss.
    """
    source = data_dir / UNSEEN / "events.tsv"
    lines = source.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], [line.split("\t") for line in lines[1:] if line]
    columns = header.split("\t")
    i_time, i_session = columns.index("Time"), columns.index("SessionId")
    start: dict[str, float] = {}
    for row in rows:
        ts = float(row[i_time])
        start[row[i_session]] = min(ts, start.get(row[i_session], ts))
    cut = max(start.values()) - TEST_HOURS * 3600.0
    out = work / f"{UNSEEN}-split"
    out.mkdir(parents=True, exist_ok=True)
    train, test = out / "train.tsv", out / "test.tsv"
    with train.open("w", encoding="utf-8") as tr, test.open("w", encoding="utf-8") as te:
        tr.write(header + "\n")
        te.write(header + "\n")
        for row in rows:
            (te if start[row[i_session]] >= cut else tr).write("\t".join(row) + "\n")
    return train, test
