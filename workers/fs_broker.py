"""The embedded default broker: kombu's filesystem transport, with messages written atomically.

kombu's own ``_put`` creates the message file, then locks and writes it; a consumer
renaming the file in between (renames ignore the advisory lock) reads it empty and the
message is lost with a decode error. Here the message is written under a name consumers
ignore and renamed into place, so a consumer only ever sees complete messages.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

TRANSPORT = "workers.fs_broker:Transport"
"""What Celery's ``broker_transport`` names for ``filesystem://`` URLs."""


class Channel(filesystem.Channel):
    """A filesystem channel whose puts are atomic (write aside, then rename)."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Put ``payload`` on ``queue``: complete before any consumer can see it."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        # A leading dot and no ".msg" ending: consumers match "<stamp>.<queue>.msg" only.
        partial = os.path.join(folder, f".partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, os.path.join(folder, name))
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise filesystem.ChannelError(
                f"Cannot add file {name!r} to directory {folder!r}") from exc


class Transport(filesystem.Transport):
    """kombu's filesystem transport with :class:`Channel`."""

    Channel = Channel
