"""The embedded broker's messages are complete before any consumer can take them."""

from __future__ import annotations

import os
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection

from workers import fs_broker


def _options(folder: Path) -> dict[str, object]:
    return {"data_folder_in": str(folder), "data_folder_out": str(folder),
            "processed_folder": str(folder), "store_processed": False,
            "control_folder": str(folder)}


def test_a_message_being_written_is_invisible_to_a_consumer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Connection("filesystem://", transport=fs_broker.TRANSPORT,
                    transport_options=_options(tmp_path)) as connection:
        channel = connection.default_channel
        looked: list[object] = []
        real_replace = os.replace

        def consumer_looks_first(src: str, dst: str) -> None:
            try:
                looked.append(channel._get("alerts"))
            except Empty:
                looked.append(None)
            real_replace(src, dst)

        monkeypatch.setattr(fs_broker.os, "replace", consumer_looks_first)
        channel._put("alerts", {"delivery": "k-1"})
        monkeypatch.undo()
        assert looked == [None]
        assert channel._get("alerts") == {"delivery": "k-1"}
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial-")]


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with Connection("filesystem://", transport=fs_broker.TRANSPORT,
                    transport_options=_options(tmp_path)) as connection:
        channel = connection.default_channel

        def disk_full(src: str, dst: str) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(fs_broker.os, "replace", disk_full)
        with pytest.raises(fs_broker.filesystem.ChannelError, match="Cannot add file"):
            channel._put("alerts", {"delivery": "k-1"})
        monkeypatch.undo()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial-")]
        with pytest.raises(Empty):
            channel._get("alerts")
