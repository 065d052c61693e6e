"""The task protocol's pure core: bytes and a ``now`` in, a verified Task or an error out.

Nothing here touches a socket, a clock, a file or a database (task-protocol.md).
Import the submodules directly: ``intake.verify_task``, ``receipts``, ``build``.
"""
