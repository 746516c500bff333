"""The embedded mode's Celery broker: kombu's filesystem transport, with messages that
appear whole.

kombu's own ``_put`` creates ``<name>.msg`` and then writes into it, so a worker that
lists the folder in between moves away and reads an empty file, and dies on the
JSON error (seen under load: the worker stops and no alert is delivered any more).
Here a message is written under a name the worker ignores and renamed into place,
which is atomic on one filesystem: the worker sees a message whole or not at all.
"""
from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + ".part"  # "<n>_<uuid>.<queue>.msg.part": not a message to the reader
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
